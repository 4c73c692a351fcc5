"""The searcher keeps the Optuna study one-to-one with Tune's trials: early-stopped trials are PRUNED,
errored ones FAIL, and after a killed driver is resumed no study trial is duplicated or left RUNNING."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.optuna_search import PruningAwareOptunaSearch, make_sampler, make_storage

MAX_T = 4


def define(trial: optuna.Trial) -> dict:
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    return {"method": "softmax"}


def searcher(url: str) -> PruningAwareOptunaSearch:
    return PruningAwareOptunaSearch(space=define, metric="val_auroc", mode="max", sampler=make_sampler("optuna", 0),
                                    storage=make_storage(url), study_name="s", max_t=MAX_T)


def states(url: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)]


def test_pruned_errored_and_complete_trials_are_told_as_such(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    s = searcher(url)
    for name in "abc":
        s.suggest(name)
        s.on_trial_result(name, {"val_auroc": 0.5, "training_iteration": 1})
    s.on_trial_complete("a", {"val_auroc": 0.9, "training_iteration": MAX_T})
    s.on_trial_complete("b", {"val_auroc": 0.5, "training_iteration": 1})  # stopped early by ASHA
    s.on_trial_complete("c", error=True)
    assert states(url) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    study = optuna.load_study(study_name="s", storage=url)
    assert study.trials[0].value == 0.9 and study.trials[1].intermediate_values == {1: 0.5}


def test_resumed_searcher_adopts_trials_asked_after_its_last_save(tmp_path):
    """The driver saved its state with trials a and b, asked the study for c, and was killed before the
    next save. The restored searcher hands c's study trial, with c's parameters, to the next Tune trial."""
    url = f"sqlite:///{tmp_path}/s.db"
    before = searcher(url)
    before.suggest("a")
    before.suggest("b")
    before.on_trial_complete("a", {"val_auroc": 0.9, "training_iteration": MAX_T})
    before.save(str(tmp_path / "searcher.pkl"))
    orphan = before.suggest("c")

    after = searcher(url)
    after.restore(str(tmp_path / "searcher.pkl"))
    assert after.suggest("d") == orphan
    assert after.suggest("e") != orphan  # once adopted, an orphan is not handed out again
    after.on_trial_complete("b", {"val_auroc": 0.7, "training_iteration": MAX_T})
    after.on_trial_complete("d", {"val_auroc": 0.8, "training_iteration": MAX_T})
    after.on_trial_complete("e", {"val_auroc": 0.6, "training_iteration": MAX_T})
    assert states(url) == [TrialState.COMPLETE] * 4  # a, b, c (completed by d), e: none duplicated


def test_rerun_of_a_trial_the_study_already_holds_as_complete_is_ignored(tmp_path):
    """Tune's saved state can lag the study by a moment: a trial told COMPLETE just before the driver
    was killed is run again after --resume. Its reports and completion must not raise or overwrite."""
    url = f"sqlite:///{tmp_path}/s.db"
    before = searcher(url)
    before.suggest("a")
    before.save(str(tmp_path / "searcher.pkl"))
    before.on_trial_result("a", {"val_auroc": 0.9, "training_iteration": MAX_T})
    before.on_trial_complete("a", {"val_auroc": 0.9, "training_iteration": MAX_T})

    after = searcher(url)
    after.restore(str(tmp_path / "searcher.pkl"))
    after.on_trial_result("a", {"val_auroc": 0.1, "training_iteration": 1})
    after.on_trial_complete("a", {"val_auroc": 0.2, "training_iteration": MAX_T})
    trial = optuna.load_study(study_name="s", storage=url).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == 0.9 and trial.intermediate_values == {MAX_T: 0.9}


def test_the_study_names_its_objective_after_the_metric_and_records_what_it_is_of(tmp_path, recwarn):
    # optuna-dashboard labels an unnamed objective "Objective 0".
    url = f"sqlite:///{tmp_path}/s.db"
    attributes = {"method": "softmax", "dataset": "digits", "command": "python search/run.py --method softmax"}
    PruningAwareOptunaSearch(space=define, metric="val_auroc", mode="max", sampler=make_sampler("optuna", 0),
                             storage=make_storage(url), study_name="s", max_t=MAX_T, study_attributes=attributes)
    study = optuna.load_study(study_name="s", storage=url)
    assert study.metric_names == ["val_auroc"]
    assert study.user_attrs == attributes
    assert not [w for w in recwarn if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]


def test_an_epoch_reported_again_after_a_resume_keeps_its_first_value_without_a_warning(tmp_path, recwarn):
    # A trial restored from its checkpoint reports the epochs after it again; Optuna keeps the first
    # value and warned "The reported value is ignored…" on the user's console at each.
    url = f"sqlite:///{tmp_path}/s.db"
    s = searcher(url)
    s.suggest("a")
    s.on_trial_result("a", {"val_auroc": 0.5, "training_iteration": 1})
    s.on_trial_result("a", {"val_auroc": 0.6, "training_iteration": 1})
    assert [str(w.message) for w in recwarn] == []
    assert optuna.load_study(study_name="s", storage=url).trials[0].intermediate_values == {1: 0.5}
