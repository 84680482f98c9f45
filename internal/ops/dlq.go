package ops

import (
	"net/http"
	"time"
)

// deadLetters reports the dead-letter stream: letters by kind of reason,
// and the age of the oldest, for an operator deciding whether to replay.
func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	if s.d.DeadLetters == nil {
		writeError(w, http.StatusNotFound, "no dead-letter stream configured")
		return
	}
	st, err := s.d.DeadLetters.Stats(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "nats: "+shortError(err))
		return
	}
	body := map[string]any{"total": st.Total, "by_kind": st.ByKind, "oldest_age_seconds": 0.0}
	if !st.Oldest.IsZero() {
		body["oldest"] = st.Oldest.UTC().Format(time.RFC3339)
		body["oldest_age_seconds"] = time.Since(st.Oldest).Seconds()
	}
	writeJSON(w, http.StatusOK, body)
}
