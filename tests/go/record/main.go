// Command record re-records the golden fixtures of tests/fixtures/asynq-go-0.26 with the real Go
// Asynq v0.26.0 (this module's go.mod) against a throw-away Redis that scripts/regen-go-fixtures.sh
// starts, flushes and stops:
//
//	record --redis 127.0.0.1:PORT --out DIR [--active-sleep 1s]
//
// It writes DIR/tasks.json (the 15 records, in the committed order), DIR/stats.json and
// DIR/servers.json in the layout the README of the fixtures describes. The Go side is one process:
// an asynq.Client enqueues, an asynq.Server runs the retry/archived/completed/stats/active cases and
// an asynq.Inspector pauses fx_paused. cli.txt and cli.json are not recorded (they need Go's CLI,
// which the module proxy does not serve). msg_decoded and decode_raw imitate `protoc --decode_raw`.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

var (
	ctx = context.Background()
	rdb *redis.Client
	opt asynq.RedisClientOpt
)

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "record: "+format+"\n", a...)
	os.Exit(2)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func main() {
	addr := flag.String("redis", "", "host:port of a throw-away Redis (db 0 is flushed)")
	out := flag.String("out", "", "directory to write tasks.json, stats.json and servers.json into")
	activeSleep := flag.Duration("active-sleep", time.Second, "how long a fx_active handler sleeps once released")
	flag.Parse()
	if *addr == "" || *out == "" {
		fail("usage: record --redis HOST:PORT --out DIR")
	}
	opt = asynq.RedisClientOpt{Addr: *addr}
	rdb = redis.NewClient(&redis.Options{Addr: *addr})
	defer rdb.Close()
	check(rdb.FlushDB(ctx).Err(), "FLUSHDB")
	check(os.MkdirAll(*out, 0o755), "mkdir")

	client := asynq.NewClient(opt)
	defer client.Close()
	// Fixed times the way the committed records have them: whole hours a little ahead.
	hour := time.Now().UTC().Truncate(time.Hour)
	processAt, deadline := hour.Add(5*time.Hour), hour.Add(3*time.Hour)
	rfc := func(t time.Time) string { return t.Format(time.RFC3339) }

	var records []map[string]any
	add := func(c kase) { records = append(records, c.record(client)) }
	add(kase{queue: "fx_pending", typ: "fixture:pending", payload: `{"state":"pending","i":0}`})
	add(kase{queue: "fx_headers", typ: "fixture:headers", payload: `{"state":"pending","headers":1}`,
		headers: map[string]string{"X-Request-Id": "req-0001"}})
	add(kase{queue: "fx_headers_multi", typ: "fixture:headers", payload: `{"state":"pending","headers":3}`,
		headers: map[string]string{"X-Request-Id": "req-0002", "tenant": "acme",
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	add(kase{queue: "fx_scheduled", typ: "fixture:scheduled", payload: `{"state":"scheduled","i":0}`,
		opts: []option{{"ProcessIn(1h)", asynq.ProcessIn(time.Hour)}}})
	add(kase{queue: "fx_scheduled_at", typ: "fixture:scheduled", payload: `{"state":"scheduled","at":true}`,
		opts: []option{{"ProcessAt(" + rfc(processAt) + ")", asynq.ProcessAt(processAt)}}})
	add(kase{queue: "fx_retry", typ: "fixture:retry", payload: `{"state":"retry","i":0}`, run: "fail",
		wait: "retry"})
	add(kase{queue: "fx_archived", typ: "fixture:archived", payload: `{"state":"archived","i":0}`,
		opts: []option{{"MaxRetry(0)", asynq.MaxRetry(0)}}, run: "fail", wait: "archived"})
	add(kase{queue: "fx_completed", typ: "fixture:completed", payload: `{"state":"completed","i":0}`,
		opts: []option{{"Retention(24h)", asynq.Retention(24 * time.Hour)}}, run: "ok", wait: "completed"})
	add(kase{queue: "fx_unique", typ: "fixture:unique", payload: `{"state":"pending","unique":true}`,
		opts: []option{{"Unique(1h)", asynq.Unique(time.Hour)}}})
	add(kase{queue: "fx_group", typ: "fixture:group", payload: `{"state":"aggregating","i":%d}`, count: 2,
		opts: []option{{`Group("batch-1")`, asynq.Group("batch-1")}}})
	add(kase{queue: "fx_opts_timeout", typ: "fixture:opts", payload: `{"opts":"timeout"}`,
		opts: []option{{"MaxRetry(5)", asynq.MaxRetry(5)}, {"Timeout(90s)", asynq.Timeout(90 * time.Second)}}})
	add(kase{queue: "fx_opts_deadline", typ: "fixture:opts", payload: `{"opts":"deadline"}`,
		opts: []option{{"Deadline(" + rfc(deadline) + ")", asynq.Deadline(deadline)}}})
	add(kase{queue: "fx_opts_all", typ: "fixture:opts", payload: `{"opts":"all"}`, opts: []option{
		{`TaskID("fixture-task-0001")`, asynq.TaskID("fixture-task-0001")},
		{"MaxRetry(7)", asynq.MaxRetry(7)}, {"Timeout(2m)", asynq.Timeout(2 * time.Minute)},
		{"Deadline(" + rfc(deadline) + ")", asynq.Deadline(deadline)},
		{"Retention(48h)", asynq.Retention(48 * time.Hour)}}})
	add(kase{queue: "fx_paused", typ: "fixture:paused", payload: `{"state":"pending","paused":true,"i":0}`,
		pause: true})

	statsCmds := recordStatsRuns(client)
	active, servers := recordActive(client, *activeSleep)
	records = append(records, active)
	stats := recordStats(statsCmds)
	servers["after_worker_exit"] = afterExit()

	writeJSON(filepath.Join(*out, "tasks.json"), records)
	writeJSON(filepath.Join(*out, "stats.json"), stats)
	writeJSON(filepath.Join(*out, "servers.json"), servers)
}

func writeJSON(path string, v any) {
	b, err := json.MarshalIndent(v, "", " ")
	check(err, "json")
	check(os.WriteFile(path, append(b, '\n'), 0o644), "write "+path)
}

// option is one enqueue option and how the records spell it.
type option struct {
	text string
	opt  asynq.Option
}

type kase struct {
	queue, typ, payload string // payload: %d becomes the index when count > 1
	headers             map[string]string
	opts                []option
	count               int
	run                 string // "" (enqueue only), "ok" or "fail": a Server then processes the task
	wait                string // the zset the task must reach
	pause               bool
}

func (c kase) record(client *asynq.Client) map[string]any {
	count := max(c.count, 1)
	texts := []string{fmt.Sprintf("Queue(%q)", c.queue)}
	opts := []asynq.Option{asynq.Queue(c.queue)}
	for _, o := range c.opts {
		texts = append(texts, o.text)
		opts = append(opts, o.opt)
	}
	var ids, payloads []string
	var cmds []map[string]any
	for i := 0; i < count; i++ {
		payload := c.payload
		if count > 1 {
			payload = fmt.Sprintf(c.payload, i)
		}
		var task *asynq.Task
		if c.headers != nil {
			task = asynq.NewTaskWithHeaders(c.typ, []byte(payload), c.headers)
		} else {
			task = asynq.NewTask(c.typ, []byte(payload))
		}
		info, err := client.Enqueue(task, opts...)
		check(err, "enqueue "+c.queue)
		ids, payloads = append(ids, info.ID), append(payloads, payload)
		cmds = append(cmds, map[string]any{
			"binary": "tests/go/record", "call": "Client.Enqueue", "type": c.typ, "payload": payload,
			"options": texts, "stdout": fmt.Sprintf("enqueued id=%s queue=%s state=%s\n", info.ID, info.Queue, info.State),
			"enqueued_at_unix_ms": time.Now().UnixMilli(),
		})
	}
	inputs := map[string]any{"type": c.typ, "payload": payloads[0], "options": texts}
	if count > 1 {
		inputs["payload"], inputs["task_ids"] = payloads, ids
	}
	if c.headers != nil {
		inputs["headers"] = c.headers
	}
	switch c.run {
	case "fail":
		inputs["handler"] = `handler returns errors.New("intentional failure"); the worker's RetryDelayFunc always returns 1h`
	case "ok":
		inputs["handler"] = "returns nil, writes no result"
	}
	if c.run != "" {
		runServer([]string{c.queue}, 1, c.run == "fail", 0, nil, func() bool {
			n, err := rdb.ZCard(ctx, key(c.queue, c.wait)).Result()
			check(err, "ZCARD")
			return n == int64(count)
		})
		cmds = append(cmds, map[string]any{"binary": "tests/go/record", "call": "Server.Run", "handler": inputs["handler"]})
	}
	if c.pause {
		in := asynq.NewInspector(opt)
		check(in.PauseQueue(c.queue), "PauseQueue")
		_ = in.Close()
		cmds = append(cmds, map[string]any{"binary": "tests/go/record", "call": "Inspector.PauseQueue", "queue": c.queue})
	}
	rec := dump(c.queue, ids[0])
	rec["description"] = fmt.Sprintf("%s, options %s, recorded by tests/go/record", c.typ, strings.Join(texts, ", "))
	rec["go_inputs"], rec["go_commands"] = inputs, cmds
	return rec
}

func key(queue, suffix string) string { return "asynq:{" + queue + "}:" + suffix }

// runServer runs an asynq.Server on queues until done() holds (checked every 20 ms), then stops it.
// A handler sleeps for sleep once hold (if not nil) is true.
func runServer(queues []string, concurrency int, failing bool, sleep time.Duration, hold *atomic.Bool, done func() bool) {
	weights := map[string]int{}
	for _, q := range queues {
		weights[q] = 1
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:              concurrency,
		Queues:                   weights,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return time.Hour },
		DelayedTaskCheckInterval: time.Hour,
		TaskCheckInterval:        20 * time.Millisecond,
		ShutdownTimeout:          2 * time.Second,
		LogLevel:                 asynq.WarnLevel,
	})
	check(srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		for hold != nil && !hold.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(sleep)
		if failing {
			return errors.New("intentional failure")
		}
		return nil
	})), "Server.Start")
	deadline := time.Now().Add(60 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			fail("server on %v did not finish in 60s", queues)
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Shutdown()
}

// statsRuns: fx_stats gets 3 successes and then 2 failures (MaxRetry 0, archived).
func recordStatsRuns(client *asynq.Client) []map[string]any {
	var cmds []map[string]any
	for _, round := range []struct {
		n       int
		what    string
		failing bool
	}{{3, "ok", false}, {2, "fail", true}} {
		for i := 0; i < round.n; i++ {
			payload := fmt.Sprintf(`{"stats":%q,"i":%d}`, round.what, i)
			info, err := client.Enqueue(asynq.NewTask("fixture:stats", []byte(payload)), asynq.Queue("fx_stats"), asynq.MaxRetry(0))
			check(err, "enqueue fx_stats")
			cmds = append(cmds, map[string]any{"binary": "tests/go/record", "call": "Client.Enqueue",
				"stdout":              fmt.Sprintf("enqueued id=%s queue=fx_stats state=pending\n", info.ID),
				"enqueued_at_unix_ms": time.Now().UnixMilli()})
		}
		runServer([]string{"fx_stats"}, 1, round.failing, 0, nil, func() bool {
			n, err := rdb.LLen(ctx, key("fx_stats", "pending")).Result()
			check(err, "LLEN")
			a, err := rdb.LLen(ctx, key("fx_stats", "active")).Result()
			check(err, "LLEN")
			return n == 0 && a == 0
		})
		cmds = append(cmds, map[string]any{"binary": "tests/go/record", "call": "Server.Run", "failing": round.failing})
	}
	return cmds
}

func recordStats(cmds []map[string]any) map[string]any {
	now := redisNowMs()
	counters := map[string]any{}
	keys, err := rdb.Keys(ctx, "asynq:{*}:processed*").Result()
	check(err, "KEYS")
	more, err := rdb.Keys(ctx, "asynq:{*}:failed*").Result()
	check(err, "KEYS")
	for _, k := range append(keys, more...) {
		v, err := rdb.Get(ctx, k).Result()
		check(err, "GET")
		pttl := pttlMs(k)
		c := map[string]any{"type": "string", "value": v, "pttl_ms": pttl, "ttl_s": -1, "expires_at_unix_ms_approx": nil}
		if pttl >= 0 {
			c["ttl_s"], c["expires_at_unix_ms_approx"] = pttl/1000, now+pttl
		}
		counters[k] = c
	}
	return map[string]any{
		"description":         "Per-queue counters, recorded by tests/go/record. fx_stats: 3 tasks succeeded (MaxRetry 0) then 2 failed (MaxRetry 0, archived).",
		"captured_at_unix_ms": now, "utc_date": time.UnixMilli(now).UTC().Format("2006-01-02"),
		"go_commands": cmds, "counters": counters, "fx_stats_all_keys": keyTypes("fx_stats"),
	}
}

// recordActive runs 4 slow tasks of fx_active on a server with concurrency 2 that also listens on
// fx_idle; it dumps the fx_active record and two server snapshots while the first two run.
func recordActive(client *asynq.Client, sleep time.Duration) (map[string]any, map[string]any) {
	var ids []string
	var enq strings.Builder
	for i := 0; i < 4; i++ {
		info, err := client.Enqueue(asynq.NewTask("fixture:slow", []byte(fmt.Sprintf(`{"state":"active","i":%d}`, i))), asynq.Queue("fx_active"))
		check(err, "enqueue fx_active")
		ids = append(ids, info.ID)
		fmt.Fprintf(&enq, "enqueued id=%s queue=fx_active state=pending\n", info.ID)
	}
	started := time.Now().UnixMilli()
	var rec map[string]any
	var snaps []map[string]any
	snapped, hold := false, &atomic.Bool{}
	runServer([]string{"fx_active", "fx_idle"}, 2, false, sleep, hold, func() bool {
		if !snapped {
			n, err := rdb.LLen(ctx, key("fx_active", "active")).Result()
			check(err, "LLEN")
			w, err := rdb.ZCard(ctx, "asynq:workers").Result()
			check(err, "ZCARD")
			if n == 2 && w == 1 && workerFields() == 2 {
				snapped = true
				rec = dump("fx_active", ids[0])
				snaps = append(snaps, serverSnapshot())
				time.Sleep(6500 * time.Millisecond) // past the 5 s heartbeat: the refresh shows
				snaps = append(snaps, serverSnapshot())
				hold.Store(true)
			}
			return false
		}
		p, err := rdb.LLen(ctx, key("fx_active", "pending")).Result()
		check(err, "LLEN")
		a, err := rdb.LLen(ctx, key("fx_active", "active")).Result()
		check(err, "LLEN")
		return p == 0 && a == 0
	})
	rec["description"] = "active task: 4 tasks in fx_active, a server with Concurrency 2 runs two of them (handler sleeps), recorded by tests/go/record"
	rec["go_inputs"] = map[string]any{"type": "fixture:slow", "payload": `{"state":"active","i":0}`,
		"options": []string{`Queue("fx_active")`}, "handler": fmt.Sprintf("the first two wait until both snapshots are taken, then every handler sleeps %s and returns nil", sleep)}
	rec["go_commands"] = []map[string]any{{"binary": "tests/go/record", "call": "Client.Enqueue x4", "stdout": enq.String()}}
	return rec, map[string]any{
		"description":               "Server state while an asynq.Server (Concurrency 2, Queues {fx_active:1, fx_idle:1}) runs 4 slow tasks of fx_active; two snapshots about 6.5 s apart; recorded by tests/go/record",
		"worker_binary":             "tests/go/record",
		"worker_pid":                os.Getpid(),
		"worker_started_at_unix_ms": started,
		"enqueue":                   map[string]any{"binary": "tests/go/record", "stdout": enq.String()},
		"snapshots":                 snaps,
	}
}

func workerFields() int {
	keys, err := rdb.Keys(ctx, "asynq:workers:*").Result()
	check(err, "KEYS")
	n := 0
	for _, k := range keys {
		c, err := rdb.HLen(ctx, k).Result()
		check(err, "HLEN")
		n += int(c)
	}
	return n
}

func redisNowMs() int64 {
	t, err := rdb.Time(ctx).Result()
	check(err, "TIME")
	return t.UnixMilli()
}

func pttlMs(k string) int64 {
	d, err := rdb.Do(ctx, "PTTL", k).Int64()
	check(err, "PTTL")
	return d
}

func bv(b string) map[string]any {
	v := map[string]any{"b64": base64.StdEncoding.EncodeToString([]byte(b))}
	if utf8.ValidString(b) {
		v["utf8"] = b
	}
	return v
}

func hashOf(k string) map[string]any {
	h, err := rdb.HGetAll(ctx, k).Result()
	check(err, "HGETALL")
	out := map[string]any{}
	for f, v := range h {
		out[f] = bv(v)
	}
	return out
}

func zsetOf(k string) map[string]any {
	zs, err := rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
	check(err, "ZRANGE")
	out := map[string]any{}
	for _, z := range zs {
		out[z.Member.(string)] = z.Score
	}
	return out
}

func keyTypes(queue string) map[string]string {
	keys, err := rdb.Keys(ctx, "asynq:{"+queue+"}:*").Result()
	check(err, "KEYS")
	out := map[string]string{}
	for _, k := range keys {
		t, err := rdb.Type(ctx, k).Result()
		check(err, "TYPE")
		out[k] = t
	}
	return out
}

func sortedMembers(k string) []string {
	m, err := rdb.SMembers(ctx, k).Result()
	check(err, "SMEMBERS")
	sort.Strings(m)
	return m
}

// dump is one tasks.json record: every key of the queue, the task's hash and the other hashes.
func dump(queue, id string) map[string]any {
	hashKey := key(queue, "t:"+id)
	keys, zsets, lists, strs, sets, others := map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}, map[string]any{}
	for k, typ := range keyTypes(queue) {
		keys[k] = map[string]any{"type": typ, "pttl_ms": pttlMs(k)}
		switch typ {
		case "zset":
			zsets[k] = zsetOf(k)
		case "list":
			l, err := rdb.LRange(ctx, k, 0, -1).Result()
			check(err, "LRANGE")
			lists[k] = l
		case "string":
			v, err := rdb.Get(ctx, k).Result()
			check(err, "GET")
			strs[k] = map[string]any{"value": bv(v), "pttl_ms": pttlMs(k)}
		case "set":
			sets[k] = sortedMembers(k)
		case "hash":
			if k != hashKey {
				others[k] = hashOf(k)
			}
		}
	}
	hash := hashOf(hashKey)
	msg, err := rdb.HGet(ctx, hashKey, "msg").Result()
	check(err, "HGET msg")
	rec := map[string]any{
		"queue": queue, "task_id": id, "captured_at_unix_ms": redisNowMs(), "redis_keys": keys,
		"hash_key": hashKey, "hash": hash, "zsets": zsets, "lists": lists,
		"msg_decoded": decodeRaw([]byte(msg), ""),
		"global_keys": map[string]any{"asynq:queues": sortedMembers("asynq:queues")},
	}
	for name, m := range map[string]map[string]any{"strings": strs, "sets": sets, "other_hashes": others} {
		if len(m) > 0 {
			rec[name] = m
		}
	}
	return rec
}

func serverSnapshot() map[string]any {
	now := redisNowMs()
	members := func(k string) map[string]any {
		zs, err := rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		check(err, "ZRANGE")
		ms := []map[string]any{}
		for _, z := range zs {
			ms = append(ms, map[string]any{"member": z.Member, "score": z.Score,
				"score_minus_now_s": float64(int64(z.Score*1000)-now) / 1000})
		}
		return map[string]any{"type": "zset", "pttl_ms": pttlMs(k), "members": ms}
	}
	infos := map[string]any{}
	keys, err := rdb.Keys(ctx, "asynq:servers:*").Result()
	check(err, "KEYS")
	for _, k := range keys {
		v, err := rdb.Get(ctx, k).Result()
		check(err, "GET")
		infos[k] = map[string]any{"type": "string", "pttl_ms": pttlMs(k), "value": bv(v), "decode_raw": decodeRaw([]byte(v), "")}
	}
	workers := map[string]any{}
	keys, err = rdb.Keys(ctx, "asynq:workers:*").Result()
	check(err, "KEYS")
	for _, k := range keys {
		h, err := rdb.HGetAll(ctx, k).Result()
		check(err, "HGETALL")
		fields := map[string]any{}
		for f, v := range h {
			fields[f] = map[string]any{"b64": base64.StdEncoding.EncodeToString([]byte(v)), "decode_raw": decodeRaw([]byte(v), "")}
		}
		workers[k] = map[string]any{"type": "hash", "pttl_ms": pttlMs(k), "fields": fields}
	}
	list := func(k string) []string {
		l, err := rdb.LRange(ctx, k, 0, -1).Result()
		check(err, "LRANGE")
		return l
	}
	return map[string]any{
		"captured_at_unix_ms": now, "asynq:servers": members("asynq:servers"), "server_info_keys": infos,
		"asynq:workers": members("asynq:workers"), "worker_keys": workers,
		"asynq:{fx_active}:lease":   members(key("fx_active", "lease")),
		"asynq:{fx_active}:active":  list(key("fx_active", "active")),
		"asynq:{fx_active}:pending": list(key("fx_active", "pending")),
		"asynq:queues":              sortedMembers("asynq:queues"),
		"keys_for_queue_fx_active":  keyTypes("fx_active"),
		"keys_for_queue_fx_idle":    keyTypes("fx_idle"),
	}
}

func afterExit() map[string]any {
	left := map[string]string{}
	for _, p := range []string{"asynq:servers:*", "asynq:workers:*"} {
		keys, err := rdb.Keys(ctx, p).Result()
		check(err, "KEYS")
		for _, k := range keys {
			left[k] = "present"
		}
	}
	exists := func(k string) int64 {
		n, err := rdb.Exists(ctx, k).Result()
		check(err, "EXISTS")
		return n
	}
	return map[string]any{
		"captured_at_unix_ms": redisNowMs(), "worker_exit_code": 0, "server_and_worker_keys_left": left,
		"asynq:servers_exists": exists("asynq:servers"), "asynq:workers_exists": exists("asynq:workers"),
	}
}

// decodeRaw prints b as `protoc --decode_raw` does: one "N: value" line per field, a nested
// "N {" block for a length-delimited field that parses as a message, else a C-escaped string.
func decodeRaw(b []byte, indent string) string {
	var sb strings.Builder
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			fmt.Fprintf(&sb, "%s%d: %d\n", indent, num, v)
			b = b[m:]
		case protowire.Fixed64Type:
			v, m := protowire.ConsumeFixed64(b)
			fmt.Fprintf(&sb, "%s%d: 0x%016x\n", indent, num, v)
			b = b[m:]
		case protowire.Fixed32Type:
			v, m := protowire.ConsumeFixed32(b)
			fmt.Fprintf(&sb, "%s%d: 0x%08x\n", indent, num, v)
			b = b[m:]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if len(v) > 0 && isMessage(v) {
				fmt.Fprintf(&sb, "%s%d {\n%s%s}\n", indent, num, decodeRaw(v, indent+"  "), indent)
			} else {
				fmt.Fprintf(&sb, "%s%d: \"%s\"\n", indent, num, cEscape(v))
			}
			b = b[m:]
		default:
			fail("decode_raw: unsupported wire type %d", typ)
		}
	}
	return sb.String()
}

func isMessage(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 1 {
			return false
		}
		b = b[n:]
		var m int
		switch typ {
		case protowire.VarintType:
			_, m = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			_, m = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			_, m = protowire.ConsumeFixed32(b)
		case protowire.BytesType:
			_, m = protowire.ConsumeBytes(b)
		default:
			return false
		}
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return true
}

func cEscape(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch c {
		case '\n':
			sb.WriteString(`\n`)
		case '\r':
			sb.WriteString(`\r`)
		case '\t':
			sb.WriteString(`\t`)
		case '"':
			sb.WriteString(`\"`)
		case '\'':
			sb.WriteString(`\'`)
		case '\\':
			sb.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&sb, `\%03o`, c)
				continue
			}
			sb.WriteByte(c)
		}
	}
	return sb.String()
}
