"""Studies: the units of work of each command, run through the resumable results store, optionally split over
torch.distributed ranks (`runner.Study`, `store.ResultsStore`, `provenance`, `distributed`, `units`)."""
