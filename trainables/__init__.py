"""Ray Tune trainables. ``runs`` holds the Ray-free work of a trial; ``osr`` adapts it to Tune."""
