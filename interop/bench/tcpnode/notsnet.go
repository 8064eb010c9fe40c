//go:build microlinkonly

package main

import (
	"context"
	"errors"
)

func startTSNet(ctx context.Context, control, authKey, hostname, dir string) (node, error) {
	return nil, errors.New("built with -tags microlinkonly: no tsnet")
}
