"""Command line and experiment assembly (the only place besides trainables/ that imports Ray)."""
