"""A trial's TensorBoard file, read back as TensorBoard reads it: the metrics under clean grouped tags
(``val/auroc``, ``train/loss``, ``split0/val/auroc``), none of Tune's bookkeeping, each epoch once across a
resumed driver, and the HPARAMS tab's data relating the trial's hyperparameters to its final metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from search.epoch_logs import epoch_loggers
from search.tensorboard_log import metric_tag, tagged_metrics

CONFIG = {"lr": 0.1, "features_per_class": 5, "batch_size": 64, "search": {"corr_penalty": True},
          "method": "difair", "dataset": "digits", "splits": [0, 1], "seeds": [0]}


class Trial:
    """What Tune's loggers read of a trial (as in test_epoch_logs.py), staged and stored in one folder."""

    def __init__(self, folder: Path, config: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.local_path = str(folder)
        self.config = config
        self.evaluated_params = dict(config)
        self.checkpoint = None  # nothing for Tune's JSON logger to copy back from storage
        self.storage = None

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def report(epoch: int, auroc: float, config: dict = CONFIG) -> dict:
    """An epoch report as Tune hands it to its loggers: a trial's metrics (trainables/open_set.py) and
    what Tune adds."""
    runs = {f"split{s}_seed0": {"train_loss": 2.0 / epoch + s, "lr": 0.1, "val_acc": 0.8 + s / 100,
                                "val_auroc": auroc + s / 100} for s in (0, 1)}
    return {
        "lr": 0.1, "train_loss": 2.0 / epoch + 0.5, "val_acc": 0.805, "val_auroc": auroc + 0.005,
        "val_auroc_max_activation": math.nan if epoch == 1 else 0.6, "epoch": epoch, "runs": runs,
        "val_unscorable_runs": 0, "node_id": "abc", "timestamp": 1796275465, "checkpoint_dir_name": None,
        "should_checkpoint": True, "done": False, "training_iteration": epoch, "trial_id": "t",
        "date": "2026-12-03_05-24-25", "time_this_iter_s": 1.0, "time_total_s": 5.0 * epoch, "pid": 16337,
        "hostname": "vm", "node_ip": "192.0.2.2", "config": config, "time_since_restore": 1.0 * epoch,
        "iterations_since_restore": epoch,
    }


def read(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_a_trial_has_clean_tags_each_epoch_once_and_its_hyperparameters_with_final_metrics(tmp_path):
    trial = Trial(tmp_path / "train_trial_t", CONFIG)
    first = epoch_loggers()  # a driver killed after epoch 3, its checkpoint of epoch 2 kept
    for logger in first:
        logger.log_trial_start(trial)
    for epoch in (1, 2, 3):
        for logger in first:
            logger.log_trial_result(epoch, trial, report(epoch, auroc=0.5 + epoch / 10))
    for writer in first[-1]._trial_writer.values():
        # Its events reach the file (tensorboardX's flush leaves its queue to a thread), its HPARAMS
        # summaries not: the trial did not end.
        writer.close()
    resumed = epoch_loggers()  # the resumed driver re-runs epoch 3, then 4
    for logger in resumed:
        logger.log_trial_start(trial)
    for epoch in (3, 4):
        for logger in resumed:
            logger.log_trial_result(epoch, trial, report(epoch, auroc=0.99 if epoch == 3 else 0.95))
    for logger in resumed:
        logger.log_trial_end(trial)

    events = read(tmp_path / "train_trial_t")
    split_tags = [f"split{s}/{t}" for s in (0, 1) for t in ("train/loss", "train/lr", "val/acc", "val/auroc")]
    assert sorted(events.Tags()["scalars"]) == sorted([
        "train/loss", "train/lr", "val/acc", "val/auroc", "val/auroc_max_activation", "val/unscorable_runs",
        *split_tags])
    for tag in events.Tags()["scalars"]:
        # NaN of epoch 1 left out; the first record of epoch 3 stands.
        want = [2, 3, 4] if tag == "val/auroc_max_activation" else [1, 2, 3, 4]
        assert [e.step for e in events.Scalars(tag)] == want, tag
    assert [round(e.value, 3) for e in events.Scalars("val/auroc")] == [0.605, 0.705, 0.805, 0.955]
    assert [round(e.value, 3) for e in events.Scalars("split1/val/auroc")] == [0.61, 0.71, 0.81, 0.96]

    hparams = events.PluginTagToContent("hparams")
    experiment = hparams_metadata.parse_experiment_plugin_data(hparams["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.metric_infos] == [
        "val/acc", "val/auroc", "val/auroc_max_activation", "val/unscorable_runs"]
    # The tab shows a metric's last value in the trial's curve: the final epoch's.
    assert {m.name.tag: events.Scalars(m.name.tag)[-1].step for m in experiment.metric_infos} == dict.fromkeys(
        ["val/acc", "val/auroc", "val/auroc_max_activation", "val/unscorable_runs"], 4)
    assert sorted(h.name for h in experiment.hparam_infos) == [
        "batch_size", "dataset", "features_per_class", "lr", "method", "search/corr_penalty"]
    start = hparams_metadata.parse_session_start_info_plugin_data(hparams["_hparams_/session_start_info"])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert values == {"lr": 0.1, "features_per_class": 5, "batch_size": 64, "search/corr_penalty": True,
                      "method": "difair", "dataset": "digits"}
    end = hparams_metadata.parse_session_end_info_plugin_data(hparams["_hparams_/session_end_info"])
    assert end.status == api_pb2.STATUS_SUCCESS


def test_the_hparams_columns_are_every_trials_and_a_failure_says_so(tmp_path):
    # A space that draws a parameter on one branch only: whichever trial TensorBoard reads the columns
    # from, they include it.
    loggers = epoch_loggers()
    with_switch, without = Trial(tmp_path / "a", CONFIG), Trial(tmp_path / "b", {"lr": 0.2, "method": "difair"})
    for trial in (with_switch, without):
        for logger in loggers:
            logger.log_trial_start(trial)
        for logger in loggers:
            logger.log_trial_result(1, trial, report(1, auroc=0.7, config=trial.config))
    for logger in loggers:
        logger.log_trial_end(without, failed=True)

    hparams = read(tmp_path / "b").PluginTagToContent("hparams")
    experiment = hparams_metadata.parse_experiment_plugin_data(hparams["_hparams_/experiment"])
    assert "search/corr_penalty" in {h.name for h in experiment.hparam_infos}
    end = hparams_metadata.parse_session_end_info_plugin_data(hparams["_hparams_/session_end_info"])
    assert end.status == api_pb2.STATUS_FAILURE
    for logger in loggers:
        logger.log_trial_end(with_switch)


@pytest.mark.parametrize(("name", "tag"), [
    ("val_auroc", "val/auroc"),
    ("train_loss", "train/loss"),
    ("ce_c1", "train/ce_c1"),  # a training log without a phase
    ("val_delta_auroc", "val/delta_auroc"),
    ("trained_on_val_auroc", "trained_on_val/auroc"),
    ("posthoc/tail20_alpha3/val_auroc", "posthoc/tail20_alpha3/val/auroc"),
    ("posthoc_best_val_auroc", "posthoc/best_val/auroc"),
    ("posthoc_invalid_cells", "posthoc/invalid_cells"),
])
def test_names_map_to_grouped_tags(name, tag):
    assert metric_tag(name) == tag


def test_a_trial_with_several_seeds_groups_each_run_under_its_split_and_seed():
    runs = {"split0_seed0": {"val_auroc": 0.7}, "split0_seed1": {"val_auroc": 0.8}}
    assert dict(tagged_metrics({"runs": runs, "done": True, "time_total_s": 3.0})) == {
        "split0/seed0/val/auroc": 0.7, "split0/seed1/val/auroc": 0.8}
