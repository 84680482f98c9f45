package cdc

import (
	"slices"
	"time"
	"unicode/utf8"

	"github.com/invalidator/invalidator/events"
	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
)

// A row event's data holds strings only, so its CloudEvent is written here
// without reflection, byte for byte as events.Encode writes it (the test
// TestEncodeMatchesEvents holds it to that): at a few hundred thousand
// rows a second, encoding/json was an eighth of cdc's CPU.

// rowMessage returns the NATS message of a row event, or ok false when its
// data holds anything but strings (the caller then uses events.Encode).
func rowMessage(subject, id, source string, at time.Time, data map[string]any) (*nats.Msg, bool) {
	keys := make([]string, 0, len(data))
	for k, v := range data {
		if _, ok := v.(string); !ok {
			return nil, false
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, 192+len(subject)+len(source)+32*len(keys))
	b = append(b, `{"specversion":"1.0","id":`...)
	b = appendString(b, id)
	b = append(b, `,"source":`...)
	b = appendString(b, source)
	b = append(b, `,"type":`...)
	b = appendString(b, subject)
	if !at.IsZero() {
		b = append(b, `,"time":"`...)
		b = at.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"datacontenttype":"application/json","data":{`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, data[k].(string))
	}
	b = append(b, "}}"...)
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header[events.HeaderMsgID] = []string{id}
	m.Header["Content-Type"] = []string{events.ContentType}
	return m, true
}

const hexDigits = "0123456789abcdef"

// appendString writes s as encoding/json does: HTML characters, control
// characters, invalid UTF-8, U+2028 and U+2029 escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(append(dst, s[start:]...), '"')
}

// appendLSN writes pglogrepl.LSN.String's form ("%X/%X") without fmt.
func appendLSN(dst []byte, lsn pglogrepl.LSN) []byte {
	dst = appendHex(dst, uint64(lsn)>>32)
	dst = append(dst, '/')
	return appendHex(dst, uint64(lsn)&0xFFFFFFFF)
}

func appendHex(dst []byte, v uint64) []byte {
	if v == 0 {
		return append(dst, '0')
	}
	var buf [16]byte
	i := len(buf)
	for ; v > 0; v >>= 4 {
		i--
		buf[i] = "0123456789ABCDEF"[v&0xF]
	}
	return append(dst, buf[i:]...)
}
