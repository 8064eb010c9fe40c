package bench

import (
	"os"
	"testing"

	"github.com/microlink-go/microlink/interop/lab"
)

// TestMain runs the package in a network namespace of its own when it is
// root (see lab.RunInNetns), where BenchmarkNodeTraffic may add addresses,
// namespaces and veth pairs without touching the host.
func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }
