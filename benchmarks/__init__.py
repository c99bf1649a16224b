"""The benchmark library: generation metrics, task suites, the comparison runner and plots; the measurement scripts are in `measure/`."""
