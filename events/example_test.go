package events_test

import (
	"fmt"

	"github.com/invalidator/invalidator/events"
)

func ExampleDecode() {
	bare, err := events.Decode("events.course.updated", "msg-1", []byte(`{"course_id": 42, "price": 4.50}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(bare.CloudEvent, bare.ID, bare.Type, bare.Data["course_id"], bare.Data["price"])

	ce, err := events.Decode("events.enrollment.created", "", []byte(`{
		"specversion": "1.0", "id": "ev-7", "source": "urn:lms",
		"type": "enrollment.created", "time": "2024-05-01T12:30:00Z",
		"data": {"user_id": "u1", "course_id": 42}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(ce.CloudEvent, ce.ID, ce.Source, ce.Type, ce.Time.Format("2006-01-02"), ce.Data["user_id"])

	_, err = events.Decode("events.course.updated", "", []byte(`[1, 2]`))
	fmt.Println(err)
	// Output:
	// false msg-1 events.course.updated 42 4.50
	// true ev-7 urn:lms enrollment.created 2024-05-01 u1
	// events: malformed event: body must be a JSON object, got array
}
