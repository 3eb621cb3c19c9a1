// Command sdkcheck evaluates feature flags with Schematic's official Go SDK
// (github.com/schematichq/schematic-go) in replicator mode, reading the Redis
// keyspace that schematic-replicator writes. The tests use it to prove that the
// real SDK, not a re-implementation of its reader, understands our Redis.
//
// Input (stdin, one JSON object):
//
//	{"redis_addr": "127.0.0.1:6379",            // single node (or redis_cluster_addrs)
//	 "redis_cluster_addrs": ["127.0.0.1:7000"], // optional: use a Cluster client instead
//	 "redis_password": "", "redis_db": 0,       // optional
//	 "health_url": "http://127.0.0.1:8090/ready",
//	 "api_url": "http://127.0.0.1:9999",        // REST API stub; the SDK must not need it
//	 "wait": "ready",                           // optional: "ready" (default), "version" or "none"
//	 "checks": [{"name": "n", "flag": "key", "company": {"id": "acme"}, "user": {"email": "a@b"}}]}
//
// Output (stdout, one JSON object):
//
//	{"sdk": "github.com/schematichq/schematic-go v1.5.5", "cache_version": "deadbeef", "ready": true,
//	 "results": [{"name": "n", "value": true, "reason": "...", "error": "...", "api_calls": [...], ...}]}
//
// A check that the SDK could not evaluate from Redis makes the SDK call the REST
// API at api_url (its built-in fallback). sdkcheck never hides that: every
// request the SDK sent while running a check is listed in api_calls and turned
// into the check's "error". The SDK's own log goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	schematicgo "github.com/schematichq/schematic-go"
	"github.com/schematichq/schematic-go/client"
	"github.com/schematichq/schematic-go/core"
	"github.com/schematichq/schematic-go/option"
)

const sdkModule = "github.com/schematichq/schematic-go"

type input struct {
	RedisAddr         string   `json:"redis_addr"`
	RedisClusterAddrs []string `json:"redis_cluster_addrs"`
	RedisPassword     string   `json:"redis_password"`
	RedisDB           int      `json:"redis_db"`
	HealthURL         string   `json:"health_url"`
	APIURL            string   `json:"api_url"`
	Wait              string   `json:"wait"`
	Checks            []check  `json:"checks"`
}

type check struct {
	Name    string            `json:"name"`
	Flag    string            `json:"flag"`
	Company map[string]string `json:"company"`
	User    map[string]string `json:"user"`
}

type result struct {
	Name      string   `json:"name"`
	Value     bool     `json:"value"`
	Reason    string   `json:"reason,omitempty"`
	Error     string   `json:"error,omitempty"`
	FlagID    *string  `json:"flag_id,omitempty"`
	CompanyID *string  `json:"company_id,omitempty"`
	UserID    *string  `json:"user_id,omitempty"`
	RuleID    *string  `json:"rule_id,omitempty"`
	RuleType  *string  `json:"rule_type,omitempty"`
	APICalls  []string `json:"api_calls,omitempty"`
}

type output struct {
	SDK          string   `json:"sdk"`
	CacheVersion string   `json:"cache_version"`
	Ready        bool     `json:"ready"`
	Results      []result `json:"results"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("reading input: %v", err)
	}
	if in.HealthURL == "" || in.APIURL == "" || (in.RedisAddr == "" && len(in.RedisClusterAddrs) == 0) {
		fail("input needs redis_addr (or redis_cluster_addrs), health_url and api_url")
	}

	logs := &sdkLog{}
	api := &recordingHTTP{inner: &http.Client{Timeout: 10 * time.Second}}

	// The Redis connection for the SDK's datastream caches. Without it the SDK in
	// replicator mode would read an empty in-process cache, not our Redis.
	var redisCache core.CacheConfig = core.RedisCacheConfig{
		Addr: in.RedisAddr, Password: in.RedisPassword, DB: in.RedisDB,
	}
	if len(in.RedisClusterAddrs) > 0 {
		redisCache = core.RedisCacheClusterConfig{Addrs: in.RedisClusterAddrs, Password: in.RedisPassword}
	}

	sdk := client.NewSchematicClient(
		// Any non-empty key: with an empty one the SDK switches to offline mode and
		// never reads Redis.
		option.WithAPIKey("sdkcheck-test-key"),
		// The REST API (used only by the fallback) and event capture both point at the
		// test's stub, so nothing leaves loopback.
		option.WithBaseURL(in.APIURL),
		option.WithEventCaptureBaseURL(in.APIURL),
		option.WithHTTPClient(api),
		// One request per fallback, no retry delays. (Client-level WithoutRetries() does
		// not reach the flag-check call in v1.5.5; MaxAttempts does.)
		option.WithMaxAttempts(1),
		option.WithDisableFlagCheckCache(),      // every fallback really reaches the stub
		option.WithEventBufferPeriod(time.Hour), // flag_check events are not flushed during a run
		option.WithLogger(logs),
		option.WithDatastream(
			option.WithReplicatorMode(),
			option.WithRedisCache(redisCache),
			option.WithReplicatorHealthURL(in.HealthURL),
			option.WithReplicatorHealthInterval(250*time.Millisecond),
			option.WithCacheTTL(0), // as the SDK README advises for replicator mode
		),
	)
	// No sdk.Close(): it would flush queued flag_check events to api_url/batch in a
	// goroutine racing our exit. The process ends right after the checks anyway.

	waitForSDK(logs, in)

	out := output{SDK: sdkVersion(), Results: []result{}}
	out.CacheVersion, out.Ready = logs.state()
	ctx := context.Background()
	for _, c := range in.Checks {
		out.Results = append(out.Results, runCheck(ctx, sdk, logs, api, c))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing output: %v", err)
	}
}

// waitForSDK blocks until the SDK has polled the health URL and learned what
// the brief asks for. The SDK exposes neither readiness nor the cache version on
// its public client, so this watches the SDK's own log lines about them (see
// sdkLog). If the wording ever changes, this times out loudly rather than
// letting checks run against the wrong key namespace.
func waitForSDK(logs *sdkLog, in input) {
	mode := in.Wait
	if mode == "" {
		mode = "ready"
	}
	if mode == "none" {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		version, ready := logs.state()
		if version != "" && (ready || mode == "version") {
			return
		}
		if time.Now().After(deadline) {
			fail("timed out after 30s waiting for the SDK to learn the replicator's state from %s "+
				"(wait=%s, cache_version=%q, ready=%v)", in.HealthURL, mode, version, ready)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runCheck evaluates one flag through the SDK's public entry point, exactly as an
// application would, and reports any REST API call it caused as an error.
func runCheck(ctx context.Context, sdk *client.SchematicClient, logs *sdkLog, api *recordingHTTP, c check) result {
	callsBefore := api.count()
	logs.resetFallback()

	resp, err := sdk.CheckFlagWithEntitlement(ctx, &schematicgo.CheckFlagRequestBody{
		Company: c.Company,
		User:    c.User,
	}, c.Flag)

	r := result{Name: c.Name}
	if resp != nil {
		r.Value, r.Reason = resp.Value, resp.Reason
		r.FlagID, r.CompanyID, r.UserID, r.RuleID = resp.FlagID, resp.CompanyID, resp.UserID, resp.RuleID
		if resp.RuleType != nil {
			s := string(*resp.RuleType)
			r.RuleType = &s
		}
	}
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	}
	r.APICalls = api.since(callsBefore)
	if len(r.APICalls) > 0 {
		problems = append(problems, "SDK fell back to the REST API: "+strings.Join(r.APICalls, ", "))
	}
	if msg := logs.fallback(); msg != "" {
		problems = append(problems, "SDK log: "+msg)
	}
	r.Error = strings.Join(problems, "; ")
	return r
}

// sdkLog is the SDK's logger. It copies every line to stderr and remembers
// what the SDK says about the replicator and about falling back to the API.
type sdkLog struct {
	mu           sync.Mutex
	cacheVersion string
	ready        bool
	lastFallback string
}

// Messages logged by the SDK's datastream client (datastream/client.go) when a
// health poll changes its state, and by the client wrapper on a fallback.
var (
	reNowReady       = regexp.MustCompile(`External replicator is now ready \(cache_version: ([^)]*)\)`)
	reVersionChanged = regexp.MustCompile(`Replicator cache version changed: \S* -> (\S+)`)
)

func (l *sdkLog) record(level, msg string, args ...any) {
	if len(args) > 0 {
		msg = fmt.Sprintf(msg, args...)
	}
	fmt.Fprintf(os.Stderr, "[sdk %s] %s\n", level, msg)
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := reNowReady.FindStringSubmatch(msg); m != nil {
		l.ready = true
		if m[1] != "" {
			l.cacheVersion = m[1]
		}
	}
	if m := reVersionChanged.FindStringSubmatch(msg); m != nil {
		l.cacheVersion = m[1]
	}
	if strings.Contains(msg, "External replicator is no longer ready") {
		l.ready = false
	}
	if strings.Contains(msg, "falling back to API") {
		l.lastFallback = msg
	}
}

func (l *sdkLog) Debug(_ context.Context, msg string, args ...any) { l.record("debug", msg, args...) }
func (l *sdkLog) Info(_ context.Context, msg string, args ...any)  { l.record("info", msg, args...) }
func (l *sdkLog) Warn(_ context.Context, msg string, args ...any)  { l.record("warn", msg, args...) }
func (l *sdkLog) Error(_ context.Context, msg string, args ...any) { l.record("error", msg, args...) }

func (l *sdkLog) state() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cacheVersion, l.ready
}

func (l *sdkLog) resetFallback() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastFallback = ""
}

func (l *sdkLog) fallback() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastFallback
}

// recordingHTTP is the HTTP client the SDK uses for the REST API. It records
// every request except event capture (POST /batch), which is not a flag check.
type recordingHTTP struct {
	inner *http.Client
	mu    sync.Mutex
	calls []string
}

func (h *recordingHTTP) Do(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/batch") {
		h.mu.Lock()
		h.calls = append(h.calls, req.Method+" "+req.URL.Path)
		h.mu.Unlock()
	}
	return h.inner.Do(req)
}

func (h *recordingHTTP) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func (h *recordingHTTP) since(n int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls[n:]...)
}

// sdkVersion names the SDK module this binary was built with.
func sdkVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == sdkModule {
				if dep.Replace != nil {
					return fmt.Sprintf("%s %s => %s %s", dep.Path, dep.Version, dep.Replace.Path, dep.Replace.Version)
				}
				return dep.Path + " " + dep.Version
			}
		}
	}
	return sdkModule + " (unknown version)"
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sdkcheck: "+format+"\n", args...)
	os.Exit(1)
}
