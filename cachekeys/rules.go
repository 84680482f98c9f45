package cachekeys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Rules is a parsed, checked rules file. It is immutable after [Parse] and
// safe for concurrent use.
type Rules struct {
	rules     []Rule
	allow     []string
	schedules []Schedule
	cdc       []CDCTable
}

// Rule invalidates its templates when an event's subject matches On.
type Rule struct {
	// On is a NATS subject filter such as "events.course.*".
	On string
	// Invalidate lists the key templates to delete, at least one.
	Invalidate []Template
	// Warm lists the targets to warm once the keys are deleted, possibly
	// none. Their placeholders are all used by Invalidate.
	Warm []WarmTarget
}

// file is the YAML layout of a rules file.
type file struct {
	Rules    []ruleYAML     `yaml:"rules"`
	Explicit *explicitYAML  `yaml:"explicit"`
	Schedule []scheduleYAML `yaml:"schedule"`
	CDC      *cdcYAML       `yaml:"cdc"`
}

type ruleYAML struct {
	On         string     `yaml:"on"`
	Invalidate []string   `yaml:"invalidate"`
	Warm       []warmYAML `yaml:"warm"`
}

type explicitYAML struct {
	Allow []string `yaml:"allow"`
}

// Load reads and parses a rules file; see [Parse]. An unreadable file gives
// the underlying [io/fs] error, not [ErrInvalidRules].
func Load(path string) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and checks a rules file; file names it in errors. Decoding
// is strict: unknown fields are refused rather than ignored. A file needs at
// least one rule, an explicit section or a schedule entry; every rule needs a valid `on`
// filter that can match an event subject events.<entity>.<action> (so
// `events.course` and `foo.>` are refused), and at least one valid template
// (see [ParseTemplate]); every
// explicit.allow entry is an exact key or a literal prefix holding the
// separator followed by `*`.
//
// A rule may list warm targets, each with a `from` URL (see
// [ParseURLTemplate]) whose placeholders, like those of its optional
// exact `key`, must be used by the rule's invalidate templates. With a key
// (store mode) a `ttl` is required, a Go duration above zero such as
// "60s"; without one (trigger mode) a ttl is refused. `headers` holds
// literal values and `headers_from_env` environment variable names; header
// names are HTTP tokens, named once across both. A top-level `schedule`
// lists global keys to refresh: `key`, `from` (both without
// placeholders), `ttl` and `every` (at least [MinEvery]) are required, each
// key at most once.
//
// A `cdc:` section maps PostgreSQL tables to the events `invalidator cdc`
// publishes (see [CDCTable]); each entity's bulk and truncated subjects,
// which carry no data, must then plan to something without data.
//
// All errors are [*RuleError] values wrapping [ErrInvalidRules]; the first
// problem found is reported.
func Parse(file string, data []byte) (*Rules, error) {
	f, err := decode(data)
	if err != nil {
		return nil, &RuleError{File: file, Reason: err.Error()}
	}
	r, err := build(f)
	if err != nil {
		var re *RuleError
		if errors.As(err, &re) {
			re.File = file
		}
		return nil, err
	}
	return r, nil
}

// decode reads exactly one YAML document, refusing unknown fields.
func decode(data []byte) (file, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return f, errors.New("empty rules file")
		}
		return f, yamlError(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return f, errors.New("more than one YAML document")
	}
	return f, nil
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)

// yamlError rewords yaml.v3's errors, notably unknown fields.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = unknownField.ReplaceAllString(m, `line $1: unknown field "$2" (not supported by this version)`)
	}
	return errors.New(strings.Join(msgs, "; "))
}

func build(f file) (*Rules, error) {
	if len(f.Rules) == 0 && f.Explicit == nil && len(f.Schedule) == 0 {
		return nil, &RuleError{Reason: "no rules"}
	}
	r := &Rules{rules: make([]Rule, 0, len(f.Rules))}
	for i, ry := range f.Rules {
		rule, err := buildRule(i+1, ry)
		if err != nil {
			return nil, err
		}
		r.rules = append(r.rules, rule)
	}
	if f.Explicit != nil {
		if err := r.setAllow(f.Explicit.Allow); err != nil {
			return nil, err
		}
	}
	if err := r.setSchedules(f.Schedule); err != nil {
		return nil, err
	}
	if err := r.setCDC(f.CDC); err != nil {
		return nil, err
	}
	return r, nil
}

func buildRule(n int, ry ruleYAML) (Rule, error) {
	fail := func(reason string) (Rule, error) {
		return Rule{}, &RuleError{Rule: n, On: ry.On, Reason: reason}
	}
	if ry.On == "" {
		return fail(`missing "on"`)
	}
	if err := checkFilter(ry.On); err != nil {
		return fail(err.Error())
	}
	if len(ry.Invalidate) == 0 {
		return fail(`"invalidate" needs at least one template`)
	}
	rule := Rule{On: ry.On, Invalidate: make([]Template, 0, len(ry.Invalidate))}
	for _, src := range ry.Invalidate {
		t, err := parseTemplate(src)
		if err != nil {
			return Rule{}, &RuleError{Rule: n, On: ry.On, Template: src, Reason: err.Error()}
		}
		rule.Invalidate = append(rule.Invalidate, t)
	}
	fields := ruleFields(rule.Invalidate)
	for i, wy := range ry.Warm {
		w, err := buildWarm(wy, fields)
		if err != nil {
			return Rule{}, atWarm(err, n, ry.On, i+1)
		}
		rule.Warm = append(rule.Warm, w)
	}
	return rule, nil
}

// atWarm places a warm target's error in its rule.
func atWarm(err error, rule int, on string, warm int) error {
	var re *RuleError
	if errors.As(err, &re) {
		re.Rule, re.On, re.Warm = rule, on, warm
	}
	return err
}

func (r *Rules) setSchedules(entries []scheduleYAML) error {
	for i, sy := range entries {
		s, err := buildSchedule(sy)
		if err == nil && slices.ContainsFunc(r.schedules, func(o Schedule) bool { return o.Key.String() == sy.Key }) {
			err = &RuleError{Template: sy.Key, Reason: "key already scheduled by an earlier entry"}
		}
		if err != nil {
			var re *RuleError
			if errors.As(err, &re) {
				re.Schedule = i + 1
			}
			return err
		}
		r.schedules = append(r.schedules, s)
	}
	return nil
}

func (r *Rules) setAllow(entries []string) error {
	if len(entries) == 0 {
		return &RuleError{Reason: "explicit.allow needs at least one entry"}
	}
	for _, e := range entries {
		if err := checkAllow(e); err != nil {
			return &RuleError{Reason: fmt.Sprintf("explicit.allow entry %s: %v", strconv.Quote(e), err)}
		}
	}
	r.allow = slices.Clone(entries)
	return nil
}

// checkAllow accepts an exact literal key or "<prefix>*" where the prefix
// is literal and holds the separator after at least one character.
func checkAllow(e string) error {
	if err := checkText(e); err != nil {
		return err
	}
	prefix, isPrefix := strings.CutSuffix(e, "*")
	if strings.ContainsAny(prefix, globMeta) {
		return errors.New(`must be an exact key or a literal prefix followed by a single trailing "*"`)
	}
	if isPrefix && strings.Index(prefix, Separator) <= 0 {
		return fmt.Errorf("prefix must hold the separator %q after at least one character", Separator)
	}
	return nil
}

// List returns the rules in file order. The result is a copy.
func (r *Rules) List() []Rule {
	out := make([]Rule, len(r.rules))
	for i, rule := range r.rules {
		out[i] = Rule{On: rule.On, Invalidate: slices.Clone(rule.Invalidate)}
		for _, w := range rule.Warm {
			out[i].Warm = append(out[i].Warm, w.clone())
		}
	}
	return out
}

// Allow returns the explicit.allow entries, nil when the file has no
// explicit section (explicit invalidation is then refused). The result is a
// copy.
func (r *Rules) Allow() []string { return slices.Clone(r.allow) }
