package lsnlease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestRenewAfter(t *testing.T) {
	for _, tc := range []struct{ valid, want time.Duration }{
		{10 * time.Minute, 9 * time.Minute},
		{90 * time.Second, 45 * time.Second},
		{2 * time.Minute, time.Minute},
		{10 * time.Second, 5 * time.Second},
	} {
		if got := RenewAfter(tc.valid); got != tc.want {
			t.Errorf("RenewAfter(%v) = %v, want %v", tc.valid, got, tc.want)
		}
	}
}

type fakeLease struct {
	mu    sync.Mutex
	calls []string
	valid func(call int) (time.Duration, error)
}

func (f *fakeLease) lease(ctx context.Context, t Target, s Shard, url string) (time.Time, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %s %s %s %s %s", t.Protocol, url, t.Token, s.TenantShard, s.ShardID, t.Timeline, t.LSN))
	n := len(f.calls)
	f.mu.Unlock()
	d, err := f.valid(n)
	return time.Now().Add(d), err
}

func (f *fakeLease) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func TestLoopMinOverShardsAndStopsWhenRefused(t *testing.T) {
	f := &fakeLease{valid: func(n int) (time.Duration, error) {
		switch n {
		case 1:
			return 200 * time.Millisecond, nil // shard 0
		case 2:
			return 100 * time.Millisecond, nil // shard 1: the earlier expiry wins
		case 3:
			return 0, errors.New("connection refused") // retried
		default:
			return 0, fmt.Errorf("pageserver: %w", ErrNotGranted)
		}
	}}
	var expiries []time.Time
	l := &Loop{
		Target: func() (Target, bool, error) {
			return Target{Protocol: "grpc", Shards: []Shard{
				{TenantShard: "t-0002", ShardID: "0002", URLs: []string{"ps0"}},
				{TenantShard: "t-0102", ShardID: "0102", URLs: []string{"ps1"}},
			}, Token: "tok", Tenant: "t", Timeline: "tl", LSN: "0/16B5A50"}, true, nil
		},
		Lease:   f.lease,
		OnLease: func(e time.Time) { expiries = append(expiries, e) },
	}
	start := time.Now()
	err := l.Run(context.Background())
	if !errors.Is(err, ErrNotGranted) {
		t.Fatalf("Run = %v, want not granted", err)
	}
	if len(expiries) != 1 || expiries[0].Sub(start) > 150*time.Millisecond {
		t.Fatalf("expiries %v (want one, the shard minimum)", expiries)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls[0] != "grpc ps0 tok t-0002 0002 tl 0/16B5A50" || f.calls[1] != "grpc ps1 tok t-0102 0102 tl 0/16B5A50" {
		t.Fatalf("calls %q", f.calls)
	}
}

func TestLoopNothingToLease(t *testing.T) {
	l := &Loop{Target: func() (Target, bool, error) { return Target{}, false, nil }, Lease: nil}
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLoopRenewsAtOnceWhenThePageserverChanges(t *testing.T) {
	f := &fakeLease{valid: func(int) (time.Duration, error) { return time.Hour, nil }}
	var mu sync.Mutex
	cs := "ps-old"
	wake := make(chan struct{}, 1)
	l := &Loop{
		Target: func() (Target, bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return Target{Protocol: "libpq", Shards: []Shard{{TenantShard: "t", ShardID: "0000", URLs: []string{cs}}},
				Tenant: "t", Timeline: "tl", LSN: "0/1"}, true, nil
		},
		Lease: f.lease,
		Wake:  wake,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	waitFor(t, func() bool { return f.count() == 1 })
	wake <- struct{}{} // same target: no renewal
	time.Sleep(50 * time.Millisecond)
	if f.count() != 1 {
		t.Fatalf("renewed without a change: %d calls", f.count())
	}
	mu.Lock()
	cs = "ps-new"
	mu.Unlock()
	wake <- struct{}{}
	waitFor(t, func() bool { return f.count() == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
