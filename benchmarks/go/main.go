// Command asynq-bench is the Go Asynq v0.26 side of asynq-aio's benchmark harness (benchmarks/run.py).
//
// It speaks the same protocol as the Python drivers (benchmarks/drv_<system>.py, see
// benchmarks/common.py), so the runner times Go Asynq exactly as it times asynq-aio and its Python
// peers:
//
//	asynq-bench produce --url URL --queue Q --n N --conc C   enqueue N tasks one call at a time from C goroutines
//	asynq-bench work    --url URL --queue Q --expect N --conc C --handler noop|sleep|latency
//	asynq-bench trickle --url URL --queue Q --n N --gap S    one task every S seconds, stamped with its enqueue time
//	asynq-bench version                                      the asynq, go-redis and Go versions built in
//
// URL is redis://host:port/db for a single Redis, or cluster://h:p,h:p,... for a Redis Cluster.
// A worker prints READY once it serves, and every role prints one "RESULT {json}" line at the end,
// with the same keys the Python drivers report.
//
// The server runs with Go Asynq's defaults except Concurrency and Queues, which the runner gives
// every system (asynq-aio's driver sets the same two, plus a ShutdownTimeout equal to Go's default
// 8 s). In particular TaskCheckInterval stays at its default of 1 s: an idle Go worker polls for
// work every 0.5-1.5 s, which is what its pick-up latency measures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// taskType is the one task type every driver enqueues and handles.
const taskType = "noop"

// pad makes every payload the same ~100 bytes of JSON as benchmarks/common.py's payload().
var pad = strings.Repeat("x", 48)

func main() {
	if len(os.Args) < 2 {
		fail("usage: asynq-bench produce|work|trickle|version [flags]")
	}
	role, args := os.Args[1], os.Args[2:]
	if role == "version" {
		printVersion()
		return
	}
	opts := parseFlags(role, args)
	switch role {
	case "produce":
		produce(opts)
	case "work":
		work(opts)
	case "trickle":
		trickle(opts)
	default:
		fail("unknown role %q", role)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "asynq-bench: "+format+"\n", a...)
	os.Exit(2)
}

// options are the flags of benchmarks/common.py's parse_args that the Go driver supports. A flag it
// does not know (--mode many, --process-in, ...) makes it exit with an error instead of measuring
// something else than the runner asked for.
type options struct {
	url     string
	queues  []string
	n       int
	conc    int
	mode    string
	expect  int
	handler string
	gap     time.Duration
	sleep   time.Duration
}

func parseFlags(role string, args []string) options {
	fs := flag.NewFlagSet(role, flag.ExitOnError)
	u := fs.String("url", "", "redis://host:port/db, or cluster://h:p,h:p")
	q := fs.String("queue", "bench", "comma-separated for several queues")
	n := fs.Int("n", 1000, "tasks to enqueue")
	conc := fs.Int("conc", 64, "producer goroutines, or the worker's Concurrency")
	mode := fs.String("mode", "one", "only \"one\": Go Asynq has no batch enqueue")
	expect := fs.Int("expect", 0, "handler runs to wait for (0: until SIGTERM)")
	handler := fs.String("handler", "noop", "noop, sleep or latency")
	gap := fs.Float64("gap", 0.02, "trickle: seconds between enqueues")
	sleep := fs.Float64("sleep", 0.01, "sleep handler: seconds")
	_ = fs.Parse(args)
	if *u == "" {
		fail("--url is required")
	}
	if *mode != "one" {
		fail("--mode %q: Go Asynq has no batch enqueue", *mode)
	}
	switch *handler {
	case "noop", "sleep", "latency":
	default:
		fail("--handler %q is not supported by the Go driver", *handler)
	}
	if *conc < 1 {
		fail("--conc must be at least 1")
	}
	var qs []string
	for _, name := range strings.Split(*q, ",") {
		if name != "" {
			qs = append(qs, name)
		}
	}
	if len(qs) == 0 {
		fail("--queue names no queue")
	}
	return options{
		url: *u, queues: qs, n: *n, conc: *conc, mode: *mode, expect: *expect, handler: *handler,
		gap: seconds(*gap), sleep: seconds(*sleep),
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// connOpt turns the runner's URL into Go Asynq's connection option. Single-Redis URLs go through
// go-redis's own parser, so host, port, database and credentials mean what they mean to go-redis.
func connOpt(raw string) asynq.RedisConnOpt {
	if rest, ok := strings.CutPrefix(raw, "cluster://"); ok {
		return asynq.RedisClusterClientOpt{Addrs: strings.Split(rest, ",")}
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		fail("--url %q: %v", raw, err)
	}
	return asynq.RedisClientOpt{Addr: o.Addr, DB: o.DB, Username: o.Username, Password: o.Password}
}

// pyFloat marshals like Python's repr of a float ("0.0", "1733500000.123"), so that the payload's
// bytes match what asynq-aio's json.dumps writes for the same values.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'f', -1, 64)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return []byte(s), nil
}

// payloadDoc is benchmarks/common.py's payload(), field for field and in the same order.
type payloadDoc struct {
	I    int      `json:"i"`
	Ts   pyFloat  `json:"ts"`
	Name string   `json:"name"`
	Tags []string `json:"tags"`
	Pad  string   `json:"pad"`
}

func payload(i int, ts float64) []byte {
	b, err := json.Marshal(payloadDoc{I: i, Ts: pyFloat(ts), Name: "user-" + strconv.Itoa(i), Tags: []string{"a", "b"}, Pad: pad})
	if err != nil {
		fail("payload: %v", err)
	}
	return b
}

// unixNow is time.time(): the Python drivers stamp and compare wall-clock seconds, and so must Go,
// for pick-up latencies to mean the same thing.
func unixNow() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func emit(kind string, data any) {
	if data == nil {
		fmt.Println(kind)
		return
	}
	b, err := json.Marshal(data)
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(kind + " " + string(b))
}

// percentile is run.py's _pct: the nearest rank with Python's round-half-to-even, so Go's and
// Python's per-call percentiles are read off their samples the same way.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	k := int(math.RoundToEven(p / 100 * float64(len(sorted)-1)))
	return sorted[min(len(sorted)-1, max(0, k))]
}

func produce(o options) {
	client := asynq.NewClient(connOpt(o.url))
	defer client.Close()
	if err := client.Ping(); err != nil {
		fail("ping: %v", err)
	}
	// Lane k enqueues tasks k, k+conc, k+2*conc, ... one call at a time, as produce_concurrently
	// does with coroutines; each lane times its own calls, merged after the clock stops.
	lanes := make([][]float64, o.conc)
	errs := make(chan error, o.conc)
	var wg sync.WaitGroup
	t0 := time.Now()
	for k := range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls := make([]float64, 0, o.n/o.conc+1)
			for i := k; i < o.n; i += o.conc {
				// Timed from building the payload on, as the Python drivers' one(i) call is.
				c0 := time.Now()
				task := asynq.NewTask(taskType, payload(i, 0))
				if _, err := client.Enqueue(task, asynq.Queue(o.queues[i%len(o.queues)])); err != nil {
					errs <- err
					return
				}
				calls = append(calls, float64(time.Since(c0))/float64(time.Millisecond))
			}
			lanes[k] = calls
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		fail("enqueue: %v", err)
	}
	var calls []float64
	for _, l := range lanes {
		calls = append(calls, l...)
	}
	sort.Float64s(calls)
	emit("RESULT", map[string]any{
		"n": o.n, "elapsed": elapsed, "rate": float64(o.n) / elapsed,
		"call_p50_ms": percentile(calls, 50), "call_p99_ms": percentile(calls, 99),
	})
}

func trickle(o options) {
	client := asynq.NewClient(connOpt(o.url))
	defer client.Close()
	if err := client.Ping(); err != nil {
		fail("ping: %v", err)
	}
	for i := range o.n {
		if _, err := client.Enqueue(asynq.NewTask(taskType, payload(i, unixNow())), asynq.Queue(o.queues[0])); err != nil {
			fail("enqueue: %v", err)
		}
		time.Sleep(o.gap)
	}
	emit("RESULT", map[string]any{"n": o.n})
}

// tally is common.py's Tally: when the first handler started, when the last one finished, how
// many ran, and (latency handler) each one's start minus the enqueue stamp in its payload. The
// mutex is shared by at most Concurrency handler goroutines and held for a few instructions.
type tally struct {
	mu         sync.Mutex
	expect     int
	count      int
	started    int
	firstStart float64
	lastEnd    float64
	latencies  []float64
	done       chan struct{}
}

func (t *tally) start(now, ts float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.firstStart == 0 {
		t.firstStart = now
	}
	if ts != 0 {
		t.latencies = append(t.latencies, now-ts)
	}
	t.started++
}

func (t *tally) finish() {
	now := unixNow()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.count++
	t.lastEnd = now
	if t.expect > 0 && t.count == t.expect {
		close(t.done)
	}
}

func (t *tally) result() map[string]any {
	t.mu.Lock()
	defer t.mu.Unlock()
	span := t.lastEnd - t.firstStart
	rate := 0.0
	if span > 0 && t.count > 1 {
		rate = float64(t.count) / span
	}
	lat := t.latencies
	if lat == nil {
		lat = []float64{}
	}
	return map[string]any{
		"count": t.count, "started": t.started, "first_start": t.firstStart, "last_end": t.lastEnd,
		"rate": rate, "latencies": lat, "rss": rssBytes(),
	}
}

// rssBytes is common.py's rss_bytes for this process: VmRSS from /proc, 0 where that is missing.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				kb, err := strconv.ParseInt(fields[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
}

func work(o options) {
	t := &tally{expect: o.expect, done: make(chan struct{})}
	weights := map[string]int{}
	for _, q := range o.queues {
		weights[q] = 1
	}
	srv := asynq.NewServer(connOpt(o.url), asynq.Config{Concurrency: o.conc, Queues: weights})
	if err := srv.Ping(); err != nil {
		fail("ping: %v", err)
	}
	handler := asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		now := unixNow()
		ts := 0.0
		if o.handler == "latency" {
			var p struct {
				Ts float64 `json:"ts"`
			}
			if err := json.Unmarshal(task.Payload(), &p); err != nil {
				return err
			}
			ts = p.Ts
		}
		t.start(now, ts)
		if o.handler == "sleep" {
			time.Sleep(o.sleep)
		}
		t.finish()
		return nil
	})
	if err := srv.Start(handler); err != nil {
		fail("start: %v", err)
	}
	emit("READY", nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-t.done:
	case <-sigs:
	}
	// The result first: the shutdown that follows (graceful, up to ShutdownTimeout) is not measured.
	emit("RESULT", t.result())
	srv.Shutdown()
}

// printVersion reports the module versions actually linked into this binary, for the results' meta.
func printVersion() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fail("no build info in this binary")
	}
	deps := map[string]string{}
	for _, d := range info.Deps {
		deps[d.Path] = d.Version
	}
	fmt.Printf("%s (go-redis %s, %s)\n", deps["github.com/hibiken/asynq"], deps["github.com/redis/go-redis/v9"], runtime.Version())
}
