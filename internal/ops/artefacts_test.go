package ops_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"
)

// The operator artefacts: a Grafana dashboard and Prometheus alerting rules
// over the worker's metrics. These tests keep them honest: every metric they
// name must exist on /metrics of a running worker.
const (
	dashboardFile = "../../deploy/grafana/invalidator.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// variable is a templating variable of a dashboard.
type variable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query any    `json:"query"` // a string, or an object with "query"
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"` // of a collapsed row
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

// rulesFile is a Prometheus rules file.
type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// metricName finds the invalidator_ identifiers of a PromQL expression (the
// character before one must not belong to an identifier).
var metricName = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])(invalidator_[A-Za-z0-9_:]*)`)

// namesIn adds the metric names of expr to names, with where they were found.
func namesIn(names map[string][]string, where, expr string) {
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		names[m[1]] = append(names[m[1]], where)
	}
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

func loadRules(t *testing.T) rulesFile {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var r rulesFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true) // a misspelt key (expresion:, annotation:) is an error
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return r
}

// dashboardPanels is every panel, those of collapsed rows included.
func dashboardPanels(ps []panel) []panel {
	var all []panel
	for _, p := range ps {
		all = append(all, p)
		all = append(all, dashboardPanels(p.Panels)...)
	}
	return all
}

// dashboardExprs is every PromQL expression of the dashboard, by where it is:
// the panels' targets and the query variables.
func dashboardExprs(d dashboard) map[string]string {
	exprs := map[string]string{}
	for _, p := range dashboardPanels(d.Panels) {
		for i, tg := range p.Targets {
			exprs["dashboard panel "+strings.TrimSpace(p.Title)+" target "+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		switch q := v.Query.(type) {
		case string:
			exprs["dashboard variable "+v.Name] = q
		case map[string]any:
			s, _ := q["query"].(string)
			exprs["dashboard variable "+v.Name] = s
		}
	}
	return exprs
}

// rulesExprs is every expression of the rules file, by rule.
func rulesExprs(r rulesFile) map[string]string {
	exprs := map[string]string{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			exprs["alert "+rule.Alert+rule.Record] = rule.Expr
		}
	}
	return exprs
}

// balanced reports whether the (), [] and {} of a PromQL expression pair up,
// outside of string literals: a cheap check for a truncated expression.
func balanced(expr string) bool {
	var stack []rune
	pair := map[rune]rune{')': '(', ']': '[', '}': '{'}
	var quote rune
	for i, c := range expr {
		switch {
		case quote != 0:
			if c == quote && (i == 0 || expr[i-1] != '\\') {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case c == ')' || c == ']' || c == '}':
			if len(stack) == 0 || stack[len(stack)-1] != pair[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0 && quote == 0
}

// TestArtefactDashboard checks the dashboard's shape: its datasource
// variable, a Prometheus expression on every panel, and the panels the
// operator needs.
func TestArtefactDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("title %q, schemaVersion %d: want a title and a schemaVersion of at least 36", d.Title, d.SchemaVersion)
	}
	hasDS := slices.ContainsFunc(d.Templating.List, func(v variable) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasDS {
		t.Error("no templating variable 'datasource' of type datasource over prometheus")
	}

	var titles []string
	for _, p := range dashboardPanels(d.Panels) {
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has a target without expr", p.Title)
			}
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target datasource uid %q, want ${datasource}", p.Title, tg.Datasource.UID)
			}
		}
	}
	for _, want := range []string{
		"Throughput by outcome", "Event lag (p50 / p99)", "Keys removed",
		"Sweep passes", "Sweep active patterns", "Sweep progress", "Sweep pattern wait p99", "Sweep keys examined",
		"Warm outcomes", "Redis / NATS up", "Consumer pending / ack pending", "Dead letters",
		"Consistency nines by timescale", "Consistency checks by result",
	} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel titled %q (panels: %q)", want, titles)
		}
	}
	for where, expr := range dashboardExprs(d) {
		if !balanced(expr) {
			t.Errorf("%s: unbalanced brackets in %q", where, expr)
		}
	}

	// Every metric the issue names is on the dashboard.
	names := map[string][]string{}
	for where, expr := range dashboardExprs(d) {
		namesIn(names, where, expr)
	}
	for _, want := range []string{
		"invalidator_events_total", "invalidator_event_lag_seconds_bucket", "invalidator_keys_removed_total",
		"invalidator_sweep_passes_total", "invalidator_sweep_active_patterns", "invalidator_sweep_progress_ratio",
		"invalidator_sweep_pattern_wait_seconds_bucket", "invalidator_sweep_keys_examined_total",
		"invalidator_warm_requests_total", "invalidator_redis_up", "invalidator_nats_up",
		"invalidator_consumer_pending", "invalidator_consumer_ack_pending", "invalidator_dead_letters",
		"invalidator_consistency_checks_total",
	} {
		if _, ok := names[want]; !ok {
			t.Errorf("the dashboard does not query %s", want)
		}
	}
}

// TestArtefactAlerts checks the rules file has the six alerts, each with a
// for, a severity, a summary and a description, over the right metric.
func TestArtefactAlerts(t *testing.T) {
	r := loadRules(t)
	want := map[string]string{ // alert: a metric its expression must name
		"InvalidatorRedisDown":              "invalidator_redis_up",
		"InvalidatorDeadLettersGrowing":     "invalidator_events_total",
		"InvalidatorLagHigh":                "invalidator_event_lag_seconds_bucket",
		"InvalidatorConsumerPendingGrowing": "invalidator_consumer_pending",
		"InvalidatorWarmBreakerOpen":        "invalidator_warm_requests_total",
		"InvalidatorConsistencyStale":       "invalidator_consistency_checks_total",
	}
	seen := map[string]bool{}
	for _, g := range r.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: want a name and rules", g.Name)
		}
		for _, rule := range g.Rules {
			if rule.Alert == "" {
				continue
			}
			if seen[rule.Alert] {
				t.Errorf("alert %s is defined twice", rule.Alert)
			}
			seen[rule.Alert] = true
			if _, err := time.ParseDuration(rule.For); err != nil || rule.For == "0s" {
				t.Errorf("alert %s: for %q, want a duration above 0 (%v)", rule.Alert, rule.For, err)
			}
			if s := rule.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("alert %s: severity %q, want critical, warning or info", rule.Alert, s)
			}
			if rule.Annotations["summary"] == "" || rule.Annotations["description"] == "" {
				t.Errorf("alert %s: want a summary and a description annotation", rule.Alert)
			}
			if !balanced(rule.Expr) {
				t.Errorf("alert %s: unbalanced brackets in %q", rule.Alert, rule.Expr)
			}
			if m, ok := want[rule.Alert]; ok {
				names := map[string][]string{}
				namesIn(names, rule.Alert, rule.Expr)
				if _, ok := names[m]; !ok {
					t.Errorf("alert %s: expr %q does not name %s", rule.Alert, rule.Expr, m)
				}
			}
		}
	}
	for a := range want {
		if !seen[a] {
			t.Errorf("no alert %s in %s", a, alertsFile)
		}
	}
	for _, rule := range r.Groups {
		for _, x := range rule.Rules {
			if x.Alert == "InvalidatorRedisDown" && x.For != "1m" {
				t.Errorf("InvalidatorRedisDown: for %q, want 1m", x.For)
			}
			if x.Alert == "InvalidatorConsumerPendingGrowing" && x.For != "5m" {
				t.Errorf("InvalidatorConsumerPendingGrowing: for %q, want 5m", x.For)
			}
			if x.Alert == "InvalidatorConsistencyStale" && (!strings.Contains(x.Expr, `timescale="60s"`) ||
				!strings.Contains(x.Expr, `result="stale"`) || !strings.Contains(x.Expr, "increase(") || !strings.Contains(x.Expr, "> 0")) {
				t.Errorf("InvalidatorConsistencyStale: expr %q, want it to fire on any increase of the stale results at the 60s timescale", x.Expr)
			}
			if x.Alert == "InvalidatorWarmBreakerOpen" && !strings.Contains(x.Annotations["description"], "breaker is open") {
				t.Errorf("InvalidatorWarmBreakerOpen: the description should say it fires when a source's breaker is open")
			}
		}
	}
}

// missingMetrics is the names that are not on the scraped page: a name
// exists if it is a family, or if it ends in _bucket, _sum or _count and what
// precedes is a histogram (a summary for _sum and _count), as the text
// parser files those series under the base name.
func missingMetrics(sc scrape, names map[string][]string) []string {
	var missing []string
	for name, where := range names {
		if !exists(sc, name) {
			sort.Strings(where)
			missing = append(missing, name+" (in "+strings.Join(slices.Compact(where), "; ")+")")
		}
	}
	sort.Strings(missing)
	return missing
}

func exists(sc scrape, name string) bool {
	if _, ok := sc[name]; ok {
		return true
	}
	for suffix, types := range map[string][]dto.MetricType{
		"_bucket": {dto.MetricType_HISTOGRAM},
		"_sum":    {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
		"_count":  {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
	} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := sc[base]; ok && slices.Contains(types, f.GetType()) {
				return true
			}
		}
	}
	return false
}

// TestArtefactMetricsExist runs a worker, publishes one event, and checks
// that every metric named by the dashboard and the alerts is on /metrics.
func TestArtefactMetricsExist(t *testing.T) {
	names := map[string][]string{}
	for where, expr := range dashboardExprs(loadDashboard(t)) {
		namesIn(names, where, expr)
	}
	for where, expr := range rulesExprs(loadRules(t)) {
		namesIn(names, where, expr)
	}
	if len(names) < 14 {
		t.Fatalf("found %d metric names in the artefacts, want at least 14: %v", len(names), names)
	}

	s := newSystem(t, options{})
	s.set("cache:course_analytics:7", "cache:course_analytics:7:a", "keep:me")
	s.publish("events.course.updated", map[string]any{"course_id": "7"})
	s.eventually("event applied", 20*time.Second, func() bool { return s.w.Stats().Applied == 1 })
	sc := s.scrape()

	if missing := missingMetrics(sc, names); len(missing) > 0 {
		t.Errorf("metrics named by the artefacts but not on /metrics:\n  %s", strings.Join(missing, "\n  "))
	}

	// The check itself: a name that does not exist, and a _bucket of a
	// counter, are reported; a histogram's _bucket/_sum/_count are not.
	bogus := map[string][]string{
		"invalidator_bogus_total":                      {"probe"},
		"invalidator_events_total_bucket":              {"probe"},
		"invalidator_event_lag_seconds_bucket":         {"probe"},
		"invalidator_event_lag_seconds_sum":            {"probe"},
		"invalidator_sweep_pattern_wait_seconds_count": {"probe"},
	}
	got := missingMetrics(sc, bogus)
	want := []string{"invalidator_bogus_total (in probe)", "invalidator_events_total_bucket (in probe)"}
	if !slices.Equal(got, want) {
		t.Errorf("missingMetrics(probe) = %q, want %q", got, want)
	}
}
