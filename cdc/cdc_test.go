package cdc_test

import (
	"testing"
)

// Each row change removes the keys the rules name for its row, through the
// real worker, and course 420's keys stay.
func TestRowChangesInvalidateThroughTheWorker(t *testing.T) {
	r := newRig(t, rigOptions{})
	keys42 := []string{"cache:course_analytics:42", "cache:course_analytics:42:w1", "cache:system_stats:all"}
	neighbour := []string{"cache:course_analytics:420", "cache:course_analytics:420:w1", "user:42"}
	steps := []struct {
		name string
		sql  string
	}{
		{"insert", "INSERT INTO courses (id, title) VALUES (42, 'Go')"},
		{"update", "UPDATE courses SET title = 'Go 2' WHERE id = 42"},
		{"delete", "DELETE FROM courses WHERE id = 42"},
	}
	r.exec("INSERT INTO courses (id, title) VALUES (420, 'neighbour')")
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r.set(append(keys42, neighbour...)...)
			r.exec(s.sql)
			r.waitGone(keys42...)
			r.requireKept(neighbour[:2]...)
			r.requireKept(neighbour[2])
		})
	}
	t.Run("truncate", func(t *testing.T) {
		r.set(append(keys42, "user:42")...)
		r.set("cache:course_analytics:420")
		r.exec("TRUNCATE courses")
		r.waitGone(append(keys42, "cache:course_analytics:420")...)
		r.requireKept("user:42")
	})
}
