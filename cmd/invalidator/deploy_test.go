package main

import (
	"os"
	"regexp"
	"testing"
)

// The deployment files agree with go.mod and with run's need for an
// explicit rules file: the builder image has go.mod's Go version and may
// not download another toolchain; the image ships its rules file as an
// example and does not set INVALIDATOR_RULES; compose sets it explicitly.
func TestDeploymentFiles(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile("../../" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gomod, dockerfile, compose := read("go.mod"), read("Dockerfile"), read("docker-compose.yml")
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(gomod)
	builder := regexp.MustCompile(`(?m)^FROM golang:(\d+\.\d+\.\d+)\S* AS builder$`).FindStringSubmatch(dockerfile)
	switch {
	case goVersion == nil:
		t.Fatal("go.mod has no go line")
	case builder == nil:
		t.Errorf("the Dockerfile's builder is not a golang image pinned to a patch release")
	case builder[1] != goVersion[1]:
		t.Errorf("the builder image has Go %s, go.mod says go %s", builder[1], goVersion[1])
	}
	if !regexp.MustCompile(`(?m)^ENV GOTOOLCHAIN=local$`).MatchString(dockerfile) {
		t.Error("the Dockerfile does not set GOTOOLCHAIN=local")
	}
	shipped := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^COPY \S+\.yaml (/etc/invalidator/\S+)$`).FindAllStringSubmatch(dockerfile, -1) {
		if !regexp.MustCompile(`example`).MatchString(m[1]) {
			t.Errorf("the image's rules file %s is not named as an example", m[1])
		}
		shipped[m[1]] = true
	}
	if len(shipped) == 0 {
		t.Error("the image ships no example rules file")
	}
	if code := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(dockerfile, ""); regexp.MustCompile(`INVALIDATOR_RULES`).MatchString(code) {
		t.Error("the Dockerfile sets INVALIDATOR_RULES; run must be told explicitly")
	}
	sets := regexp.MustCompile(`(?m)^\s+INVALIDATOR_RULES: (\S+)`).FindAllStringSubmatch(compose, -1)
	if len(sets) < 2 {
		t.Errorf("docker-compose.yml sets INVALIDATOR_RULES %d times, want it for the worker and for cdc", len(sets))
	}
	for _, set := range sets {
		if !shipped[set[1]] {
			t.Errorf("docker-compose.yml sets INVALIDATOR_RULES to %q, not a file the image ships (%v)", set[1], shipped)
		}
	}
}
