"""Ray Tune trainables. ``runs`` (open-set) and ``gate_clustering`` (ClustNet) hold the Ray-free work of
a trial, ``tasks`` picks one per method, ``trial`` adapts it to Tune."""
