// Command peer is the Go Asynq v0.26.0 side of asynq-aio's live interop tests (tests/test_go_live.py).
//
// It is driven entirely by argv, so the Python tests can run real Go producers, workers and
// inspectors against the same Redis (or Redis Cluster) as asynq-aio:
//
//	peer enqueue --redis HOST:PORT [--db N] --type T [--json S | --hex H] [options] [--count N]
//	peer worker  --cluster H:P,H:P --queues Q1,Q2 --log FILE [--concurrency N] [...]
//	peer inspect --redis HOST:PORT --queue Q [--id ID ...]
//	peer cancel  --redis HOST:PORT --id ID
//	peer schedule --redis HOST:PORT --spec SPEC --type T --queue Q [--json S]
//
// enqueue prints one JSON line per task (its TaskInfo, or its error); worker prints "ready" once
// it serves and appends one JSON line per handler run to --log; inspect prints one JSON object;
// cancel publishes the ID on asynq:cancel with Inspector.CancelProcessing, as `asynq task cancel`;
// schedule runs an asynq.Scheduler with one entry, prints "ready" and its entry ID, and stops on
// SIGTERM.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: peer enqueue|worker|inspect|cancel|schedule [flags]")
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "enqueue":
		enqueue(args)
	case "worker":
		worker(args)
	case "inspect":
		inspect(args)
	case "cancel":
		cancel(args)
	case "schedule":
		schedule(args)
	default:
		fail("unknown subcommand %q", cmd)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "peer: "+format+"\n", a...)
	os.Exit(2)
}

// target holds the connection flags every subcommand shares.
type target struct {
	redis, cluster string
	db             int
}

func newFlags(name string) (*flag.FlagSet, *target) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	t := &target{}
	fs.StringVar(&t.redis, "redis", "", "host:port of a single Redis")
	fs.IntVar(&t.db, "db", 0, "database number of the single Redis")
	fs.StringVar(&t.cluster, "cluster", "", "comma-separated host:port seeds of a Redis Cluster")
	return fs, t
}

func (t *target) opt() asynq.RedisConnOpt {
	switch {
	case t.redis != "" && t.cluster == "":
		return asynq.RedisClientOpt{Addr: t.redis, DB: t.db}
	case t.cluster != "" && t.redis == "":
		return asynq.RedisClusterClientOpt{Addrs: strings.Split(t.cluster, ",")}
	}
	fail("give exactly one of --redis and --cluster")
	return nil
}

// headerFlags collects repeated --header k=v.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("header %q is not key=value", v)
	}
	h[k] = val
	return nil
}

// idFlags collects repeated --id.
type idFlags []string

func (ids *idFlags) String() string     { return strings.Join(*ids, ",") }
func (ids *idFlags) Set(v string) error { *ids = append(*ids, v); return nil }

// taskJSON is a TaskInfo as the tests read it: bytes in hex, times in unix seconds (0 = none).
type taskJSON struct {
	ID            string            `json:"id"`
	Queue         string            `json:"queue"`
	Type          string            `json:"type"`
	PayloadHex    string            `json:"payload_hex"`
	Headers       map[string]string `json:"headers"`
	State         string            `json:"state"`
	MaxRetry      int               `json:"max_retry"`
	Retried       int               `json:"retried"`
	LastErr       string            `json:"last_err"`
	LastFailedAt  int64             `json:"last_failed_at"`
	TimeoutS      float64           `json:"timeout_s"`
	Deadline      int64             `json:"deadline"`
	Group         string            `json:"group"`
	NextProcessAt int64             `json:"next_process_at"`
	IsOrphaned    bool              `json:"is_orphaned"`
	RetentionS    float64           `json:"retention_s"`
	CompletedAt   int64             `json:"completed_at"`
	ResultHex     *string           `json:"result_hex"`
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func toJSON(i *asynq.TaskInfo) taskJSON {
	out := taskJSON{
		ID: i.ID, Queue: i.Queue, Type: i.Type, PayloadHex: hex.EncodeToString(i.Payload),
		Headers: i.Headers, State: i.State.String(), MaxRetry: i.MaxRetry,
		Retried: i.Retried, LastErr: i.LastErr, LastFailedAt: unix(i.LastFailedAt),
		TimeoutS: i.Timeout.Seconds(), Deadline: unix(i.Deadline), Group: i.Group,
		NextProcessAt: unix(i.NextProcessAt), IsOrphaned: i.IsOrphaned,
		RetentionS: i.Retention.Seconds(), CompletedAt: unix(i.CompletedAt),
	}
	if i.Result != nil {
		r := hex.EncodeToString(i.Result)
		out.ResultHex = &r
	}
	return out
}

func printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("json: %v", err)
	}
	fmt.Println(string(b))
}

func enqueue(args []string) {
	fs, tgt := newFlags("enqueue")
	typ := fs.String("type", "", "task type (required)")
	jsonPayload := fs.String("json", "", "payload: a JSON text; {i} becomes the task's index")
	hexPayload := fs.String("hex", "", "payload: hex bytes")
	queue := fs.String("queue", "", "Queue option")
	maxRetry := fs.Int("max-retry", -1, "MaxRetry option (-1: not given)")
	timeout := fs.Duration("timeout", 0, "Timeout option")
	deadline := fs.Int64("deadline", 0, "Deadline option, unix seconds")
	processIn := fs.Duration("process-in", 0, "ProcessIn option")
	unique := fs.Duration("unique", 0, "Unique option (TTL)")
	taskID := fs.String("task-id", "", "TaskID option; {i} becomes the task's index")
	retention := fs.Duration("retention", 0, "Retention option")
	group := fs.String("group", "", "Group option")
	count := fs.Int("count", 1, "how many tasks to enqueue")
	headers := headerFlags{}
	fs.Var(headers, "header", "a header key=value (repeatable); uses NewTaskWithHeaders")
	_ = fs.Parse(args)
	if *typ == "" || (*jsonPayload != "" && *hexPayload != "") {
		fail("enqueue needs --type and at most one of --json and --hex")
	}

	client := asynq.NewClient(tgt.opt())
	defer client.Close()
	for i := 0; i < *count; i++ {
		// An empty --json/--hex means a nil payload, what Go code passes for "no payload".
		var payload []byte
		if *jsonPayload != "" {
			payload = []byte(strings.ReplaceAll(*jsonPayload, "{i}", strconv.Itoa(i)))
			if !json.Valid(payload) {
				fail("--json is not valid JSON: %s", payload)
			}
		} else if *hexPayload != "" {
			b, err := hex.DecodeString(*hexPayload)
			if err != nil {
				fail("--hex: %v", err)
			}
			payload = b
		}
		var opts []asynq.Option
		if *queue != "" {
			opts = append(opts, asynq.Queue(*queue))
		}
		if *maxRetry >= 0 {
			opts = append(opts, asynq.MaxRetry(*maxRetry))
		}
		if *timeout > 0 {
			opts = append(opts, asynq.Timeout(*timeout))
		}
		if *deadline > 0 {
			opts = append(opts, asynq.Deadline(time.Unix(*deadline, 0)))
		}
		if *processIn > 0 {
			opts = append(opts, asynq.ProcessIn(*processIn))
		}
		if *unique > 0 {
			opts = append(opts, asynq.Unique(*unique))
		}
		if *taskID != "" {
			opts = append(opts, asynq.TaskID(strings.ReplaceAll(*taskID, "{i}", strconv.Itoa(i))))
		}
		if *retention > 0 {
			opts = append(opts, asynq.Retention(*retention))
		}
		if *group != "" {
			opts = append(opts, asynq.Group(*group))
		}
		var task *asynq.Task
		if len(headers) > 0 {
			task = asynq.NewTaskWithHeaders(*typ, payload, headers, opts...)
		} else {
			task = asynq.NewTask(*typ, payload, opts...)
		}
		info, err := client.Enqueue(task)
		if err != nil {
			printJSON(map[string]any{
				"error":            err.Error(),
				"duplicate":        errors.Is(err, asynq.ErrDuplicateTask),
				"task_id_conflict": errors.Is(err, asynq.ErrTaskIDConflict),
			})
			continue
		}
		printJSON(toJSON(info))
	}
}

// runLog appends one JSON line per handler run; the mutex keeps concurrent lines whole.
type runLog struct {
	mu sync.Mutex
	f  *os.File
}

func (l *runLog) add(ctx context.Context, t *asynq.Task) {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	b, err := json.Marshal(map[string]any{
		"id": id, "type": t.Type(), "payload_hex": hex.EncodeToString(t.Payload()), "queue": queue,
		"retried": retried, "max_retry": maxRetry, "headers": t.Headers(),
	})
	if err != nil {
		panic(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		panic(err)
	}
}

func worker(args []string) {
	fs, tgt := newFlags("worker")
	queues := fs.String("queues", "default", "comma-separated queues, weight 1 each")
	concurrency := fs.Int("concurrency", 4, "Concurrency")
	logPath := fs.String("log", "", "run log file (required)")
	work := fs.Duration("work", 0, "how long an ordinary task's handler sleeps")
	retryDelay := fs.Duration("retry-delay", 0, "RetryDelayFunc's constant delay")
	delayedCheck := fs.Duration("delayed-check", 200*time.Millisecond, "DelayedTaskCheckInterval")
	shutdown := fs.Duration("shutdown-timeout", 2*time.Second, "ShutdownTimeout")
	_ = fs.Parse(args)
	if *logPath == "" {
		fail("worker needs --log")
	}
	f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail("open log: %v", err)
	}
	defer f.Close()
	runs := &runLog{f: f}

	weights := map[string]int{}
	for _, q := range strings.Split(*queues, ",") {
		weights[q] = 1
	}
	srv := asynq.NewServer(tgt.opt(), asynq.Config{
		Concurrency:              *concurrency,
		Queues:                   weights,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return *retryDelay },
		DelayedTaskCheckInterval: *delayedCheck,
		TaskCheckInterval:        100 * time.Millisecond,
		ShutdownTimeout:          *shutdown,
		LogLevel:                 asynq.WarnLevel,
	})
	// The task type chooses the behaviour: "fail" errors, "result" writes a result, "block" holds
	// its worker until the task's context ends, anything else sleeps --work and succeeds.
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		runs.add(ctx, t)
		switch t.Type() {
		case "fail":
			return errors.New("intentional failure")
		case "result":
			_, err := t.ResultWriter().Write(append([]byte("go-result:"), t.Payload()...))
			return err
		case "block":
			<-ctx.Done()
			return ctx.Err()
		}
		time.Sleep(*work)
		return nil
	})
	if err := srv.Start(handler); err != nil {
		fail("start: %v", err)
	}
	fmt.Println("ready")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	srv.Shutdown()
	fmt.Println("stopped")
}

func inspect(args []string) {
	fs, tgt := newFlags("inspect")
	queue := fs.String("queue", "", "queue to inspect (required)")
	var ids idFlags
	fs.Var(&ids, "id", "also GetTaskInfo of this task ID (repeatable)")
	_ = fs.Parse(args)
	if *queue == "" {
		fail("inspect needs --queue")
	}
	in := asynq.NewInspector(tgt.opt())
	defer in.Close()

	qi, err := in.GetQueueInfo(*queue)
	if err != nil {
		fail("GetQueueInfo: %v", err)
	}
	out := map[string]any{"info": map[string]any{
		"size": qi.Size, "groups": qi.Groups, "pending": qi.Pending, "active": qi.Active,
		"scheduled": qi.Scheduled, "retry": qi.Retry, "archived": qi.Archived,
		"completed": qi.Completed, "aggregating": qi.Aggregating, "processed": qi.Processed,
		"failed": qi.Failed, "processed_total": qi.ProcessedTotal, "failed_total": qi.FailedTotal,
		"paused": qi.Paused,
	}}
	lists := map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		"pending": in.ListPendingTasks, "active": in.ListActiveTasks,
		"scheduled": in.ListScheduledTasks, "retry": in.ListRetryTasks,
		"archived": in.ListArchivedTasks, "completed": in.ListCompletedTasks,
	}
	for state, list := range lists {
		infos, err := list(*queue, asynq.PageSize(10000))
		if err != nil {
			fail("List %s tasks: %v", state, err)
		}
		tasks := []taskJSON{}
		for _, i := range infos {
			tasks = append(tasks, toJSON(i))
		}
		out[state] = tasks
	}
	tasks := map[string]taskJSON{}
	for _, id := range ids {
		i, err := in.GetTaskInfo(*queue, id)
		if err != nil {
			fail("GetTaskInfo %s: %v", id, err)
		}
		tasks[id] = toJSON(i)
	}
	out["tasks"] = tasks

	// What `asynq queue ls` and `asynq server ls` of Go's CLI print: Inspector.Queues and .Servers.
	queues, err := in.Queues()
	if err != nil {
		fail("Queues: %v", err)
	}
	out["queues"] = queues
	servers, err := in.Servers()
	if err != nil {
		fail("Servers: %v", err)
	}
	srvs := []map[string]any{}
	for _, s := range servers {
		workers := []map[string]any{}
		for _, w := range s.ActiveWorkers {
			workers = append(workers, map[string]any{
				"task_id": w.TaskID, "task_type": w.TaskType, "payload_hex": hex.EncodeToString(w.TaskPayload),
				"queue": w.Queue, "started": unix(w.Started), "deadline": unix(w.Deadline),
			})
		}
		srvs = append(srvs, map[string]any{
			"id": s.ID, "host": s.Host, "pid": s.PID, "concurrency": s.Concurrency, "queues": s.Queues,
			"strict_priority": s.StrictPriority, "started": unix(s.Started), "status": s.Status,
			"active_workers": workers,
		})
	}
	out["servers"] = srvs
	printJSON(out)
}

func cancel(args []string) {
	fs, tgt := newFlags("cancel")
	id := fs.String("id", "", "ID of the active task to cancel (required)")
	_ = fs.Parse(args)
	if *id == "" {
		fail("cancel needs --id")
	}
	in := asynq.NewInspector(tgt.opt())
	defer in.Close()
	if err := in.CancelProcessing(*id); err != nil {
		fail("CancelProcessing: %v", err)
	}
	printJSON(map[string]any{"canceled": *id})
}

func schedule(args []string) {
	fs, tgt := newFlags("schedule")
	spec := fs.String("spec", "@every 1s", "cron spec")
	taskType := fs.String("type", "", "task type (required)")
	queue := fs.String("queue", "default", "queue")
	jsonText := fs.String("json", "", "payload as JSON text (empty: nil payload)")
	_ = fs.Parse(args)
	if *taskType == "" {
		fail("schedule needs --type")
	}
	var payload []byte
	if *jsonText != "" {
		payload = []byte(*jsonText)
	}
	// a 1 s heartbeat (default 10 s) so that `cron ls` lists the entry within a short test
	sched := asynq.NewScheduler(tgt.opt(), &asynq.SchedulerOpts{LogLevel: asynq.WarnLevel, HeartbeatInterval: time.Second})
	entryID, err := sched.Register(*spec, asynq.NewTask(*taskType, payload), asynq.Queue(*queue))
	if err != nil {
		fail("register: %v", err)
	}
	if err := sched.Start(); err != nil {
		fail("start: %v", err)
	}
	fmt.Println("ready", entryID)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	sched.Shutdown()
	fmt.Println("stopped")
}
