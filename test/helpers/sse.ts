/** A Server-Sent Events reader over fetch, for the server's tests. */
export interface SseEvent {
  id?: string;
  event: string;
  data: unknown;
}

/**
 * Reads `url`'s event stream until the server ends it or `stop(event)` returns true (then the connection is
 * dropped, as a client that goes away would).
 */
export async function readEvents(url: string, opts: { lastEventId?: string; stop?: (e: SseEvent) => boolean; headers?: Record<string, string> } = {}): Promise<SseEvent[]> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}), ...opts.headers }, signal: controller.signal });
  if (res.status !== 200) throw new Error(`events: HTTP ${res.status}`);
  const out: SseEvent[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (controller.signal.aborted) return out;
      throw err;
    }
    if (chunk.done) return out;
    buf += decoder.decode(chunk.value, { stream: true });
    let cut: number;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const e: Partial<SseEvent> & { dataText?: string } = {};
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const key = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (key === 'id') e.id = value;
        else if (key === 'event') e.event = value;
        else if (key === 'data') e.dataText = (e.dataText ? `${e.dataText}\n` : '') + value;
      }
      if (e.dataText === undefined) continue;
      const ev: SseEvent = { id: e.id, event: e.event ?? 'message', data: JSON.parse(e.dataText) };
      out.push(ev);
      if (opts.stop?.(ev)) {
        controller.abort();
        await reader.cancel().catch(() => undefined);
        return out;
      }
    }
  }
}
