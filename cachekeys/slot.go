package cachekeys

import (
	"strconv"
	"strings"
	"sync"
)

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = 16384

// Slot returns the hash slot of key on a Redis Cluster: CRC16 (XMODEM) of
// the key, or of its hash tag (the part between the first "{" and the next
// "}", when not empty), modulo SlotCount.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return int(crc16(key) % SlotCount)
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}

var (
	tagsOnce sync.Once
	tags     [SlotCount]string
)

// SlotTag returns a short hash tag (without braces) whose slot is slot: a
// key holding "{" + SlotTag(s) + "}" before any other brace lives in slot s.
// The table is the first base-36 string, shortest first, of each slot; it
// is built once, on first use (about a millisecond).
func SlotTag(slot int) string {
	tagsOnce.Do(func() {
		left := SlotCount
		for n := 0; left > 0; n++ {
			t := strconv.FormatInt(int64(n), 36)
			if s := crc16(t) % SlotCount; tags[s] == "" {
				tags[s] = t
				left--
			}
		}
	})
	return tags[slot%SlotCount]
}
