package cachekeys

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MinEvery is the shortest refresh interval a schedule entry accepts.
const MinEvery = time.Second

// WarmTarget is one warm entry of a rule: a URL to GET once the rule's keys
// are invalidated. In store mode (Key set) the response body is written to
// Key with TTL; in trigger mode the GET alone is the point, the application
// caching on its own miss.
type WarmTarget struct {
	// Key is the exact key to store the body under; the zero Template
	// (String() == "") in trigger mode.
	Key Template
	// From is the URL to GET.
	From URLTemplate
	// TTL is the stored key's time to live: > 0 in store mode, 0 in
	// trigger mode.
	TTL time.Duration
	// Headers holds literal request header values by header name.
	Headers map[string]string
	// HeadersFromEnv maps a header name to the name of the environment
	// variable holding its value; the value itself is never in the file.
	HeadersFromEnv map[string]string
}

// Store reports whether the target is in store mode, that is, whether Key is
// set.
func (w WarmTarget) Store() bool { return w.Key.String() != "" }

// render fills the target's key and URL from an event's data; the error
// wraps ErrRejected.
func (w WarmTarget) render(data map[string]any) (WarmRequest, error) {
	var key string
	if w.Store() {
		var err error
		if key, err = w.Key.Render(data); err != nil {
			return WarmRequest{}, err
		}
	}
	u, err := w.From.Render(data)
	if err != nil {
		return WarmRequest{}, err
	}
	return w.request(key, u), nil
}

func (w WarmTarget) request(key, u string) WarmRequest {
	return WarmRequest{
		Key: key, URL: u, Host: w.From.Host(), TTL: w.TTL,
		Headers: maps.Clone(w.Headers), HeadersFromEnv: maps.Clone(w.HeadersFromEnv),
	}
}

func (w WarmTarget) clone() WarmTarget {
	w.Headers, w.HeadersFromEnv = maps.Clone(w.Headers), maps.Clone(w.HeadersFromEnv)
	return w
}

// Schedule is a refresh-ahead entry: a global key refreshed every Every,
// whether or not an event arrives. Its Key and From hold no placeholders
// and it is always in store mode.
type Schedule struct {
	WarmTarget
	// Every is the refresh interval, at least [MinEvery].
	Every time.Duration
}

// Request returns the entry as a request for the warmer. A schedule holds no
// placeholders, so no event data is needed and rendering cannot fail.
func (s Schedule) Request() WarmRequest {
	return s.request(s.Key.String(), s.From.String())
}

// WarmRequest is a rendered warm target, ready for the warmer.
type WarmRequest struct {
	// Key is the key to store the response body under, "" in trigger mode.
	Key string
	// URL is the rendered URL to GET.
	URL string
	// Host is the URL's host:port (see [URLTemplate.Host]), for per-host
	// limits and circuit breakers.
	Host string
	// TTL is the stored key's time to live, 0 in trigger mode.
	TTL time.Duration
	// Headers holds literal request header values by header name.
	Headers map[string]string
	// HeadersFromEnv maps a header name to the name of the environment
	// variable holding its value. The caller reads the environment.
	HeadersFromEnv map[string]string
}

// Schedules returns the schedule entries in file order. The result is a copy.
func (r *Rules) Schedules() []Schedule {
	out := make([]Schedule, len(r.schedules))
	for i, s := range r.schedules {
		out[i] = Schedule{WarmTarget: s.clone(), Every: s.Every}
	}
	return out
}

// EnvNames returns every environment variable name referenced by
// headers_from_env, in rules and schedule alike, sorted and each once. A
// caller can check at start-up that they are all set.
func (r *Rules) EnvNames() []string {
	var names []string
	for _, w := range r.warmTargets() {
		for _, env := range w.HeadersFromEnv {
			names = append(names, env)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Warms reports whether the file asks for any warming: a rule with warm
// targets or a schedule entry.
func (r *Rules) Warms() bool { return len(r.warmTargets()) > 0 }

// warmTargets lists every warm target of the rules and schedule.
func (r *Rules) warmTargets() []WarmTarget {
	var out []WarmTarget
	for _, rule := range r.rules {
		out = append(out, rule.Warm...)
	}
	for _, s := range r.schedules {
		out = append(out, s.WarmTarget)
	}
	return out
}

// warmYAML is the YAML layout of a warm target.
type warmYAML struct {
	Key            string            `yaml:"key"`
	From           string            `yaml:"from"`
	TTL            string            `yaml:"ttl"`
	Headers        map[string]string `yaml:"headers"`
	HeadersFromEnv map[string]string `yaml:"headers_from_env"`
}

// scheduleYAML is the YAML layout of a schedule entry.
type scheduleYAML struct {
	warmYAML `yaml:",inline"`
	Every    string `yaml:"every"`
}

// buildWarm checks a rule's warm target; fields are the placeholders of the
// rule's invalidate templates. The error is a *RuleError without position.
func buildWarm(wy warmYAML, fields []string) (WarmTarget, error) {
	w, err := buildTarget(wy)
	if err != nil {
		return WarmTarget{}, err
	}
	if err := checkFields(w.Key, fields); err != nil {
		return WarmTarget{}, err
	}
	if err := checkFields(w.From, fields); err != nil {
		return WarmTarget{}, err
	}
	return w, nil
}

// fielded is a template with placeholders.
type fielded interface {
	Fields() []string
	String() string
}

// checkFields requires the placeholders of t to be among fields.
func checkFields(t fielded, fields []string) error {
	for _, f := range t.Fields() {
		if !slices.Contains(fields, f) {
			return &RuleError{Template: t.String(), Reason: fmt.Sprintf(
				"placeholder {%s} is not present in the rule's data: a warm placeholder must be used by the rule's invalidate templates", f)}
		}
	}
	return nil
}

// buildSchedule checks a schedule entry. The error is a *RuleError without
// position.
func buildSchedule(sy scheduleYAML) (Schedule, error) {
	if sy.Key == "" {
		return Schedule{}, &RuleError{Reason: `"key" is required: a schedule entry stores its response`}
	}
	w, err := buildTarget(sy.warmYAML)
	if err != nil {
		return Schedule{}, err
	}
	for _, t := range []fielded{w.Key, w.From} {
		if f := t.Fields(); len(f) > 0 {
			return Schedule{}, &RuleError{Template: t.String(), Reason: fmt.Sprintf(
				"placeholder {%s} not allowed: a schedule entry has no event data", f[0])}
		}
	}
	every, err := parseDuration("every", sy.Every)
	if err != nil {
		return Schedule{}, err
	}
	if every < MinEvery {
		return Schedule{}, &RuleError{Reason: fmt.Sprintf(`"every" %s is shorter than %s`, every, MinEvery)}
	}
	return Schedule{WarmTarget: w, Every: every}, nil
}

// buildTarget checks the parts shared by warm targets and schedule entries.
func buildTarget(wy warmYAML) (WarmTarget, error) {
	if wy.From == "" {
		return WarmTarget{}, &RuleError{Reason: `"from" is required`}
	}
	from, err := ParseURLTemplate(wy.From)
	if err != nil {
		return WarmTarget{}, err
	}
	w := WarmTarget{From: from}
	if w.Key, w.TTL, err = buildStore(wy); err != nil {
		return WarmTarget{}, err
	}
	if err := checkHeaders(wy.Headers, wy.HeadersFromEnv); err != nil {
		return WarmTarget{}, &RuleError{Reason: err.Error()}
	}
	w.Headers, w.HeadersFromEnv = maps.Clone(wy.Headers), maps.Clone(wy.HeadersFromEnv)
	return w, nil
}

// buildStore checks key and ttl: both set (store mode) or neither (trigger
// mode).
func buildStore(wy warmYAML) (Template, time.Duration, error) {
	if wy.Key == "" {
		if wy.TTL != "" {
			return Template{}, 0, &RuleError{Reason: `"ttl" without "key" does nothing: a trigger-mode target stores nothing`}
		}
		return Template{}, 0, nil
	}
	key, err := ParseTemplate(wy.Key)
	if err != nil {
		return Template{}, 0, err
	}
	if key.IsPattern() {
		return Template{}, 0, &RuleError{Template: wy.Key, Reason: "a warm key must be an exact key, not a pattern"}
	}
	ttl, err := parseDuration("ttl", wy.TTL)
	return key, ttl, err
}

// parseDuration parses a required, positive Go duration.
func parseDuration(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, &RuleError{Reason: fmt.Sprintf("%q is required", name)}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, &RuleError{Reason: fmt.Sprintf(`%q %s is not a duration: write a Go duration such as "60s" or "1m"`, name, strconv.Quote(s))}
	}
	if d <= 0 {
		return 0, &RuleError{Reason: fmt.Sprintf("%q %s must be greater than zero", name, strconv.Quote(s))}
	}
	return d, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkHeaders checks header names and values, environment variable names,
// and that no header is named twice (names are case-insensitive).
func checkHeaders(headers, fromEnv map[string]string) error {
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		if err := checkHeaderName(name, seen); err != nil {
			return err
		}
		if err := checkHeaderValue(headers[name]); err != nil {
			return fmt.Errorf("header %q: %w", name, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(fromEnv)) {
		if err := checkHeaderName(name, seen); err != nil {
			return err
		}
		if env := fromEnv[name]; !envName.MatchString(env) {
			return fmt.Errorf("headers_from_env %q: %q is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", name, env)
		}
	}
	return nil
}

func checkHeaderName(name string, seen map[string]bool) error {
	if name == "" || strings.IndexFunc(name, notTokenChar) >= 0 {
		return fmt.Errorf("header name %q is not an HTTP token", name)
	}
	lower := strings.ToLower(name)
	if seen[lower] {
		return fmt.Errorf("header %q is set twice (in headers and headers_from_env, or in two spellings)", name)
	}
	seen[lower] = true
	return nil
}

// checkHeaderValue refuses CR, LF, NUL and the other control characters
// net/http would refuse to send; a horizontal tab is allowed.
func checkHeaderValue(v string) error {
	for _, c := range v {
		if c == '\r' || c == '\n' || c == 0 || (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("value holds control character %q", c)
		}
	}
	return nil
}

// notTokenChar reports whether c is outside RFC 7230's tchar.
func notTokenChar(c rune) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c))
}

// ruleFields returns the placeholders of a rule's invalidate templates.
func ruleFields(ts []Template) []string {
	var fields []string
	for _, t := range ts {
		for _, f := range t.Fields() {
			fields = appendOnce(fields, f)
		}
	}
	return fields
}
