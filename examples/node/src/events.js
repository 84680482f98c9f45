// Publishing domain events to JetStream in the shape of the README's event
// contract: subject events.<entity>.<action>, a CloudEvents 1.0 structured
// body, and Nats-Msg-Id set to the event id so that the stream stores a
// retried publish once.
import { randomUUID } from 'node:crypto';
import { JSONCodec, headers } from 'nats';

const SUBJECT = /^events\.[a-z0-9_-]+\.[a-z0-9_-]+$/;
const jc = JSONCodec();

export function newEvent(subject, data, source) {
  if (!SUBJECT.test(subject)) throw new Error(`subject ${subject} is outside events.<entity>.<action>`);
  return {
    specversion: '1.0',
    id: randomUUID(),
    source,
    type: subject,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data,
  };
}

// publish sends event (from newEvent) and returns the stream sequence. The
// same event may be sent again after a failure: the stream deduplicates it
// by its id within its duplicate window.
export async function publish(js, event, { timeout = 5000 } = {}) {
  const h = headers();
  h.set('Nats-Msg-Id', event.id);
  const ack = await js.publish(event.type, jc.encode(event), { msgID: event.id, headers: h, timeout });
  return ack.seq;
}
