// Stands in for @daily-co/daily-js in the bundle.
//
// @pipecat-ai/websocket-transport imports daily-js at the top of its module, but only its
// DailyMediaManager uses it, and DailyMediaManager downloads Daily's call-object bundle
// from a CDN when it connects. talkline's page uses WavMediaManager (the browser's own
// audio APIs) so that it works with no internet; this stub keeps ~260 kB of unused code
// out of the bundle and fails loudly if anything ever reaches for Daily.
function unavailable() {
  throw new Error("daily-js is not bundled in talkline's page: use WavMediaManager");
}

export default {
  getCallInstance: () => undefined,
  createCallObject: unavailable,
};
