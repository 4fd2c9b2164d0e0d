package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README tells how to build and install this binary with the Go
// version go.mod asks for, and its quick start keeps exactly its two
// commands: run the broker, run all tests.
func TestReadmeBuildInstructions(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(gomod)
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if module == nil || goVersion == nil {
		t.Fatal("go.mod has no module or go line")
	}
	text := string(readme)
	for _, want := range []string{
		"go install " + string(module[1]) + "/cmd/tern@latest",
		"go build -o tern ./cmd/tern",
		"Go " + string(goVersion[1]) + " or newer",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("README lacks %q", want)
		}
	}

	quick, _, _ := strings.Cut(text[strings.Index(text, "## Quick start"):], "\n## ")
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(quick)
	if block == nil {
		t.Fatal("no command block in the quick start")
	}
	var commands []string
	for _, line := range strings.Split(block[1], "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			commands = append(commands, line)
		}
	}
	if want := []string{"go run ./cmd/tern serve", "go test ./..."}; strings.Join(commands, "|") != strings.Join(want, "|") {
		t.Errorf("quick start commands %q, want %q", commands, want)
	}
}
