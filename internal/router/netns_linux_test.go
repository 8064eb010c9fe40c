package router

import (
	"testing"

	"github.com/microlink-go/microlink/internal/netlink/nltest"
)

func runInNetns(t *testing.T, f func()) { nltest.InNetns(t, f) }
