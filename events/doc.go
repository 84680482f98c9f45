// Package events defines the domain events that services publish to NATS
// JetStream and the invalidator worker consumes: the subject scheme
// events.<entity>.<action>, the wire format (a CloudEvents 1.0 JSON event in
// structured mode, or a bare JSON object taken as the event data), and a
// Publisher for Go services.
//
// Decode is the single parser for incoming messages; every rejection wraps
// ErrMalformed so a consumer can terminate the message instead of retrying it.
package events
