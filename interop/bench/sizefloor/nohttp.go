//go:build !withhttp

package main

import "errors"

func fetch(string) error { return errors.New("built without net/http (-tags withhttp)") }
