package sweep

// Merge folds the walks of several nodes (a cluster's masters) into one
// status for a progress bar: running if any runs, the mean progress of the
// running walks, the keys examined summed. False when there is no walk.
func Merge(all []Status) (Status, bool) {
	if len(all) == 0 {
		return Status{}, false
	}
	m := all[0]
	if len(all) == 1 {
		return m, true
	}
	m.Progress, m.Examined, m.Running = 0, 0, false
	running := 0
	for _, s := range all {
		m.Examined += s.Examined
		if s.Running {
			m.Running = true
			m.Progress += s.Progress
			running++
		}
	}
	if running > 0 {
		m.Progress /= float64(running)
	}
	return m, true
}
