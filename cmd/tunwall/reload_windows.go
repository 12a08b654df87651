package main

import (
	"errors"
	"os"
)

func inode(os.FileInfo) uint64 { return 0 }

func signalReload(int) error { return errors.New("not supported on windows") }
