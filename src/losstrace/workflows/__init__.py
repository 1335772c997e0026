"""What drives stages or the store: run lookup, replay, bisect, gallery, CI report."""
