package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/explain"
)

// pageSize is the number of letters a page of the list shows.
const pageSize = 50

// view is what every page's template gets.
type view struct {
	Base, Page, Title string
	ReadOnly, NoToken bool
	Snap              Snapshot
	Data              any
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"pct": func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
		"ts":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"add": func(a, b int) int { return a + b },
		"plural": func(n int, one, many string) string {
			if n == 1 {
				return one
			}
			return many
		},
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(files, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

func (c *Console) render(w http.ResponseWriter, code int, page, title string, data any) {
	snap, _ := c.live.get(false)
	v := view{Base: c.base, Page: page, Title: title, ReadOnly: c.cfg.ReadOnly, NoToken: c.cfg.Token == "", Snap: snap, Data: data}
	var b bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&b, "layout", v); err != nil {
		c.d.Logger.Error("❌ console page failed", "page", page, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// problem shows a page that says what went wrong.
func (c *Console) problem(w http.ResponseWriter, code int, msg, back string) {
	c.render(w, code, "problem", "Problem", map[string]string{"Message": msg, "Back": back})
}

func (c *Console) notFound(w http.ResponseWriter, r *http.Request) {
	c.problem(w, http.StatusNotFound, "No such page: "+r.URL.Path, c.base)
}

func (c *Console) overview(w http.ResponseWriter, _ *http.Request) {
	c.render(w, http.StatusOK, "overview", "Overview", nil)
}

func (c *Console) sweeps(w http.ResponseWriter, _ *http.Request) {
	c.render(w, http.StatusOK, "sweeps", "Sweeps", nil)
}

// listQuery is the filter and position of the list, from the URL.
type listQuery struct {
	Kind, Subject, Text string
	Offset              int
}

func readListQuery(v url.Values) listQuery {
	q := listQuery{Subject: strings.TrimSpace(v.Get("subject")), Text: strings.TrimSpace(v.Get("q"))}
	if k := v.Get("kind"); isKind(k) {
		q.Kind = k
	}
	q.Offset, _ = strconv.Atoi(v.Get("offset"))
	q.Offset = max(q.Offset, 0)
	return q
}

func (q listQuery) filter() deadletter.Filter {
	return deadletter.Filter{Kind: deadletter.Kind(q.Kind), Subject: q.Subject, Text: q.Text}
}

// Values encodes the query for a link; offset -1 leaves it out.
func (q listQuery) values(offset int, kind string) url.Values {
	v := url.Values{}
	if kind != "" {
		v.Set("kind", kind)
	}
	if q.Subject != "" {
		v.Set("subject", q.Subject)
	}
	if q.Text != "" {
		v.Set("q", q.Text)
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	return v
}

// link is a URL of the list.
func (c *Console) link(v url.Values) string {
	if len(v) == 0 {
		return c.base + "dlq"
	}
	return c.base + "dlq?" + v.Encode()
}

type kindTab struct {
	Kind, Label, URL string
	Count            int
	Active           bool
}

type dlqData struct {
	Q                       listQuery
	Page                    deadletter.Page
	From, To                int
	Tabs                    []kindTab
	PrevURL, NextURL, Query string
	Elapsed                 string
}

func (c *Console) dlqList(w http.ResponseWriter, r *http.Request) {
	if c.d.Letters == nil {
		c.problem(w, http.StatusServiceUnavailable, "No dead-letter stream is configured.", c.base)
		return
	}
	q := readListQuery(r.URL.Query())
	start := time.Now()
	p, err := c.letters.Page(r.Context(), q.filter(), q.Offset, pageSize)
	if err != nil {
		c.problem(w, http.StatusServiceUnavailable, "Could not read the dead letters: "+err.Error(), c.base)
		return
	}
	d := dlqData{Q: q, Page: p, From: q.Offset + 1, To: q.Offset + len(p.Letters), Query: q.values(q.Offset, q.Kind).Encode(),
		Elapsed: time.Since(start).Round(time.Millisecond).String()}
	all := 0
	for _, n := range p.ByKind {
		all += n
	}
	d.Tabs = append(d.Tabs, kindTab{Label: "All", URL: c.link(q.values(0, "")), Count: all, Active: q.Kind == ""})
	for _, k := range []deadletter.Kind{deadletter.Malformed, deadletter.Rejected, deadletter.Failed} {
		d.Tabs = append(d.Tabs, kindTab{Kind: string(k), Label: string(k), URL: c.link(q.values(0, string(k))),
			Count: p.ByKind[k], Active: q.Kind == string(k)})
	}
	if q.Offset > 0 {
		d.PrevURL = c.link(q.values(max(0, q.Offset-pageSize), q.Kind))
	}
	if q.Offset+pageSize < p.Matched {
		d.NextURL = c.link(q.values(q.Offset+pageSize, q.Kind))
	}
	c.render(w, http.StatusOK, "dlq", "Dead letters", d)
}

type letterData struct {
	L        deadletter.Letter
	Body     string
	Headers  [][2]string
	Explain  string
	Rejected bool
}

func (c *Console) dlqShow(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || c.d.Letters == nil {
		c.notFound(w, r)
		return
	}
	l, err := c.d.Letters.Get(r.Context(), seq)
	if errors.Is(err, deadletter.ErrNoLetter) || errors.Is(err, deadletter.ErrNotALetter) {
		c.problem(w, http.StatusNotFound, fmt.Sprintf("No dead letter %d: it was replayed or purged.", seq), c.base+"dlq")
		return
	}
	if err != nil {
		c.problem(w, http.StatusServiceUnavailable, "Could not read the letter: "+err.Error(), c.base+"dlq")
		return
	}
	d := letterData{L: l, Body: string(l.Body)}
	var pretty bytes.Buffer
	if json.Indent(&pretty, l.Body, "", "  ") == nil {
		d.Body = pretty.String()
	}
	for k, vs := range l.Header {
		d.Headers = append(d.Headers, [2]string{k, strings.Join(vs, ", ")})
	}
	sortPairs(d.Headers)
	if c.d.Rules != nil {
		var b bytes.Buffer
		d.Rejected = errors.Is(explain.Write(&b, c.d.Rules, l.Subject, string(l.Body)), explain.ErrRejected)
		d.Explain = b.String()
	}
	c.render(w, http.StatusOK, "letter", fmt.Sprintf("Dead letter %d", seq), d)
}

func sortPairs(p [][2]string) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j][0] < p[j-1][0]; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

type explainData struct {
	Rules, Path       string
	Subject, Data     string
	Result            string
	Asked, Rejected   bool
	SubjectSuggestion string
}

// rulesPage shows the rules file and the Explain form; Explain is a GET,
// since it changes nothing (and works in read-only mode).
func (c *Console) rulesPage(w http.ResponseWriter, r *http.Request) {
	d := explainData{Rules: string(c.rules), Path: c.cfg.RulesPath, Subject: r.URL.Query().Get("subject"), Data: r.URL.Query().Get("data")}
	if d.Subject != "" && c.d.Rules != nil {
		var b bytes.Buffer
		body := d.Data
		if strings.TrimSpace(body) == "" {
			body = "{}"
		}
		d.Asked = true
		d.Rejected = errors.Is(explain.Write(&b, c.d.Rules, d.Subject, body), explain.ErrRejected)
		d.Result = b.String()
	}
	c.render(w, http.StatusOK, "rules", "Rules", d)
}
