package controltest

import (
	"os"
	"testing"

	"github.com/microlink-go/microlink/interop/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.RunInNetns(m)) }
