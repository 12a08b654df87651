package main

func bench(tunwall, out string) error { return errUsage }
