package server

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// internalSentinels are the package's error values that never reach a client
// as themselves: each is caught and turned into something else where it is
// returned. Any other package-level err* value must be a clientError.
var internalSentinels = map[string]string{
	"errLostRace":          "caught by the creator, which reads what the winner created",
	"errContentNotAllowed": "wrapped into invalidArgument naming the field",
	"errContentMismatch":   "wrapped into invalidArgument naming the field",
	"errNotText":           "wrapped into invalidArgument naming the field",
}

// TestEveryServerErrorIsDeclaredWithItsCode parses the package so that a new
// sentinel declared with errors.New, which toConnectError would hide as
// Internal, fails here rather than in front of a client.
func TestEveryServerErrorIsDeclaredWithItsCode(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	declared := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if !strings.HasPrefix(id.Name, "err") || i >= len(vs.Values) {
						continue
					}
					call, ok := vs.Values[i].(*ast.CallExpr)
					if !ok {
						continue
					}
					switch fn := exprName(call.Fun); fn {
					case "clientError":
						declared++
						if _, internal := internalSentinels[id.Name]; internal {
							t.Errorf("%s: %s is a clientError but listed as internal", fset.Position(id.Pos()), id.Name)
						}
						if code := exprName(call.Args[0]); !clientCodes[code] {
							t.Errorf("%s: %s is declared with %s, not a code a client can act on", fset.Position(id.Pos()), id.Name, code)
						}
					case "errors.New", "fmt.Errorf":
						if _, internal := internalSentinels[id.Name]; !internal {
							t.Errorf("%s: %s is declared with %s, so a client would see Internal; declare it with clientError(code, text), or list it in internalSentinels with where it is caught", fset.Position(id.Pos()), id.Name, fn)
						}
					}
				}
			}
		}
	}
	if declared < 50 {
		t.Fatalf("found %d clientError sentinels; the parse is not seeing the table", declared)
	}
}

var clientCodes = map[string]bool{
	"connect.CodeInvalidArgument": true, "connect.CodeUnauthenticated": true,
	"connect.CodePermissionDenied": true, "connect.CodeNotFound": true,
	"connect.CodeAlreadyExists": true, "connect.CodeFailedPrecondition": true,
	"connect.CodeResourceExhausted": true, "connect.CodeUnavailable": true,
}

func exprName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprName(e.X) + "." + e.Sel.Name
	}
	return fmt.Sprintf("%T", e)
}

func TestToConnectErrorKeepsSentinelCodeThroughWrapping(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		err      error
		wantCode connect.Code
		wantText string
	}{
		{fmt.Errorf("send: %w", errNotMember), connect.CodePermissionDenied, errNotMember.Error()},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", errGroupFull)), connect.CodeResourceExhausted, errGroupFull.Error()},
		{errCallNodeUnreachable, connect.CodeUnavailable, errCallNodeUnreachable.Error()},
		{errors.New("boom: secret detail"), connect.CodeInternal, "internal error; it has been logged"},
		{fmt.Errorf("x: %w", context.Canceled), connect.CodeCanceled, "request canceled"},
	}
	for _, tt := range tests {
		got := toConnectError(context.Background(), logger, "/test", tt.err)
		var cerr *connect.Error
		if !errors.As(got, &cerr) {
			t.Fatalf("toConnectError(%v) = %T, want *connect.Error", tt.err, got)
		}
		if cerr.Code() != tt.wantCode || cerr.Message() != tt.wantText {
			t.Errorf("toConnectError(%v) = %v %q, want %v %q", tt.err, cerr.Code(), cerr.Message(), tt.wantCode, tt.wantText)
		}
	}
}
