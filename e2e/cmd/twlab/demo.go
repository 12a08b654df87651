package main

func demo(tunwall string) error { return errUsage }
