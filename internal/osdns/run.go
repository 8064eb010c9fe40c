package osdns

import (
	"os"
	"path/filepath"
)

// findCommand returns the path of an executable file name in $PATH or
// the usual system directories, or "".
func findCommand(name string) string {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	dirs = append(dirs, "/usr/bin", "/bin", "/usr/sbin", "/sbin")
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}
