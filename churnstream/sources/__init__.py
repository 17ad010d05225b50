"""Event sources: the simulator with ground truth and real data sets turned into contract events."""
