//go:build !linux

package netmon

// newWatcher reports that there is no event source here: the monitor
// polls.
func newWatcher() (watcher, error) { return nil, nil }

// defaultRoutes is not implemented here; interfaces and their addresses
// tell the changes apart.
func defaultRoutes() ([]osRoute, error) { return nil, nil }
