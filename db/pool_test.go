package db_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/dbtest"
)

func show(t *testing.T, d *db.DB, name string) string {
	t.Helper()
	var v string
	if err := d.Pool().QueryRow(context.Background(), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Connections start with Parley's planner settings, and a URL that sets one
// itself wins.
func TestOpenSetsPlannerDefaultsTheURLMayOverride(t *testing.T) {
	base := dbtest.URL(t)
	d, err := db.Open(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := show(t, d, "plan_cache_mode"); got != "force_generic_plan" {
		t.Errorf("plan_cache_mode = %q, want force_generic_plan", got)
	}
	if got := show(t, d, "random_page_cost"); got != "1.1" {
		t.Errorf("random_page_cost = %q, want 1.1", got)
	}

	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("random_page_cost", "2")
	q.Set("plan_cache_mode", "auto")
	u.RawQuery = q.Encode()
	d2, err := db.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if got := show(t, d2, "random_page_cost"); got != "2" {
		t.Errorf("with the URL's setting random_page_cost = %q, want 2", got)
	}
	if got := show(t, d2, "plan_cache_mode"); got != "auto" {
		t.Errorf("with the URL's setting plan_cache_mode = %q, want auto", got)
	}
}
