package netstack

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// waitIdle waits until n workers wait for a task.
func waitIdle(t *testing.T, w *workers, n int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); w.idle.Load() != n; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers idle, want %d", w.idle.Load(), n)
		}
	}
}

// Tasks one after another run on the worker that ran the one before. A
// worker counts as idle from just before it waits, so a task given in
// that instant starts a goroutine of its own (seen once in a loaded run):
// a few more than one may start, never one per task.
func TestWorkersReuseAnIdleWorker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	w := newWorkers(ctx, &wg)
	defer func() { cancel(); wg.Wait() }()
	const tasks = 20
	for i := 0; i < tasks; i++ {
		done := make(chan struct{})
		w.run(func() { close(done) })
		<-done
		waitIdle(t, w, int32(w.started.Load()))
	}
	if n := w.started.Load(); n > 3 {
		t.Fatalf("%d tasks in a row started %d goroutines, want at most 3", tasks, n)
	}
}

func TestWorkersNeverWaitForABusyOne(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	w := newWorkers(ctx, &wg)
	defer func() { cancel(); wg.Wait() }()
	release := make(chan struct{})
	var running sync.WaitGroup
	running.Add(3)
	for i := 0; i < 3; i++ {
		w.run(func() { running.Done(); <-release }) // returns at once though all block
	}
	running.Wait() // all three run at the same time
	close(release)
	waitIdle(t, w, 3)
	if n := w.started.Load(); n != 3 {
		t.Fatalf("three blocking tasks started %d goroutines, want 3", n)
	}
}

func TestWorkersExit(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		var wg sync.WaitGroup
		w := newWorkers(context.Background(), &wg)
		w.idleFor = 10 * time.Millisecond
		w.run(func() {})
		wg.Wait() // returns once the worker has idled out
		if w.idle.Load() != 0 {
			t.Fatal("an exited worker still counts as idle")
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		w := newWorkers(ctx, &wg) // idles for ten seconds
		w.run(func() {})
		waitIdle(t, w, 1)
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("an idle worker outlived its context")
		}
	})
}
