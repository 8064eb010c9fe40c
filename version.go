package microlink

import (
	"runtime/debug"
	"sync"
)

// Version is microlink's version, told to control (Hostinfo.IPNVersion)
// and printed by "microlink version". Builds stamp it:
//
//	go build -ldflags "-X github.com/microlink-go/microlink.Version=1.2.3" ./cmd/microlink
//
// When it is empty, VersionString falls back to the module version or VCS
// revision in the binary's build information.
var Version = ""

var buildVersion = sync.OnceValue(func() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	const path = "github.com/microlink-go/microlink"
	mod := &bi.Main
	if mod.Path != path {
		mod = nil
		for _, d := range bi.Deps {
			if d.Path == path {
				mod = d
				break
			}
		}
	}
	if mod != nil && mod.Version != "" && mod.Version != "(devel)" {
		return mod.Version
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
})

// VersionString returns the version this binary reports: Version if the
// build stamped it, else what its build information says.
func VersionString() string { return buildVersion() }
