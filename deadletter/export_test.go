package deadletter

// Hits is the number of pages p served from memory.
func (p *Pager) Hits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits
}
