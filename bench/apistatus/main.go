// Command apistatus is the helper of bench/api-status.sh: `minimal` serves a fixed body
// (the bytes compute-api's GET /status answered) with a bare net/http handler, the
// baseline compute-api is compared with; `rate` is an open-loop fixed-rate HTTP client
// that records every request's latency, measured from the time the request was due (so a
// stalled server cannot hide its queueing: no coordinated omission), and prints the
// percentiles. Standard library only; it is a measuring tool, not part of the package.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: apistatus minimal|rate [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "minimal":
		err = minimal(os.Args[2:])
	case "rate":
		err = rate(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apistatus:", err)
		os.Exit(1)
	}
}

// minimal serves the bytes of -body on every path, as application/json.
func minimal(args []string) error {
	fs := flag.NewFlagSet("minimal", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:39180", "listen address")
	bodyFile := fs.String("body", "", "file with the response body")
	_ = fs.Parse(args)
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	return http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
}

// rate sends GET -url at -rps for -duration over up to -conns kept-alive connections.
func rate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET")
	rps := fs.Int("rps", 2000, "requests per second")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	conns := fs.Int("conns", 64, "concurrent requests (connections) at most")
	authz := fs.String("authorization", "", "Authorization header value")
	_ = fs.Parse(args)
	if *url == "" || *rps <= 0 {
		return fmt.Errorf("-url and a positive -rps are needed")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}}
	total := int(duration.Seconds() * float64(*rps))
	interval := time.Second / time.Duration(*rps)
	due := make(chan time.Time, total)
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, total)
		svcs = make([]time.Duration, 0, total)
		errs int
	)
	ctx, cancel := context.WithTimeout(context.Background(), *duration+30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			for at := range due {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
				if *authz != "" {
					req.Header.Set("Authorization", *authz)
				}
				sent := time.Now()
				resp, err := client.Do(req)
				ok := err == nil
				if ok {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
				lat, svc := time.Since(at), time.Since(sent)
				mu.Lock()
				if ok {
					lats = append(lats, lat)
					svcs = append(svcs, svc)
				} else {
					errs++
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lats)
	slices.Sort(svcs)
	pctOf := func(v []time.Duration, p float64) float64 {
		if len(v) == 0 {
			return 0
		}
		i := int(p * float64(len(v)-1))
		return float64(v[i].Microseconds()) / 1000
	}
	pct := func(p float64) float64 { return pctOf(lats, p) }
	// p*_ms count from when each request was due (coordinated omission corrected: a
	// stalled server shows, and so does this client's own late wake-ups on a busy
	// machine); svc_p*_ms from when the request was handed to the HTTP client.
	fmt.Printf("target_rps=%d sent=%d ok=%d errors=%d achieved_rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f svc_p50_ms=%.3f svc_p99_ms=%.3f\n",
		*rps, total, len(lats), errs, float64(len(lats)+errs)/elapsed.Seconds(), pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1),
		pctOf(svcs, 0.50), pctOf(svcs, 0.99))
	return nil
}
