"""Generation metrics, task suites and benchmark scripts."""
