package listeners_test

import (
	"strings"
	"testing"

	"github.com/ternmq/tern/hooks/auth"
)

func mustACL(t *testing.T, s string) *auth.ACLRules {
	t.Helper()
	r, err := auth.ParseACL(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
