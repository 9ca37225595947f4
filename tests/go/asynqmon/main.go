// Command asynqmon serves asynqmon v0.7.2 (Go Asynq's web UI and its JSON API) for
// tests/test_asynqmon.py, so the tests can check what the UI reads from, and does to, the Redis that
// asynq-aio writes:
//
//	asynqmon --redis HOST:PORT [--db N] [--port P] [--root /monitor]
//	asynqmon --cluster H:P,H:P [--port P] [--root /monitor]
//
// It listens on 127.0.0.1:P (P 0, the default, picks a free port), prints one line
// "ready http://127.0.0.1:PORT/ROOT" once it accepts connections (the API is under ROOT/api), and
// shuts down on SIGTERM or SIGINT, printing "stopped".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "asynqmon: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	fs := flag.NewFlagSet("asynqmon", flag.ExitOnError)
	redisAddr := fs.String("redis", "", "host:port of a single Redis")
	db := fs.Int("db", 0, "database number of the single Redis")
	cluster := fs.String("cluster", "", "comma-separated host:port seeds of a Redis Cluster")
	port := fs.Int("port", 0, "port to listen on at 127.0.0.1 (0 picks a free one)")
	root := fs.String("root", "/monitor", "URL path asynqmon is served under")
	_ = fs.Parse(os.Args[1:])

	var opt asynq.RedisConnOpt
	switch {
	case *redisAddr != "" && *cluster == "":
		opt = asynq.RedisClientOpt{Addr: *redisAddr, DB: *db}
	case *cluster != "" && *redisAddr == "":
		opt = asynq.RedisClusterClientOpt{Addrs: strings.Split(*cluster, ",")}
	default:
		fail("give exactly one of --redis and --cluster")
	}

	h := asynqmon.New(asynqmon.Options{RootPath: *root, RedisConnOpt: opt})
	defer h.Close()

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fail("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(h.RootPath()+"/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	fmt.Printf("ready http://%s%s\n", ln.Addr(), h.RootPath())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigs:
	case err := <-served:
		fail("serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail("shutdown: %v", err)
	}
	fmt.Println("stopped")
}
