/**
 * Long work on the page's main thread, given back to the page in turns: a conversion that runs for a minute in one
 * stretch of tasks over 50 ms each freezes the page's input and drawing meanwhile (the Long Tasks API's measure,
 * bench/web-large-unet.ts).
 */

/** Resolves in a later task (not a microtask): the page handles input and draws in between. */
function nextTask(): Promise<void> {
  // A message port rather than a timer: a background tab delays timers to once a second, not messages.
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/**
 * A function to call between pieces of long work: it gives the page a turn once the work since the last turn has run
 * `budgetMs` (else it returns at once, so short pieces cost nothing).
 */
export function pageTurns(budgetMs = 16): () => Promise<void> {
  let since = performance.now();
  return async () => {
    if (performance.now() - since < budgetMs) return;
    await nextTask();
    since = performance.now();
  };
}
