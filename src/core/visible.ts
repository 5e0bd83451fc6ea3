/**
 * Text from outside (the API's answers and errors, instructions, ids a client sent) is shown by every
 * command and log line through these, so that it can never ring, move or clear a terminal: C0 controls
 * (but tab), DEL and C1 controls (U+0080 to U+009F, which some terminals read as escape sequences) become
 * visible `\u` escapes.
 */
const CONTROLS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;
/** What JSON.stringify leaves as it is: DEL and C1. */
const CONTROLS_JSON_KEEPS = /[\u007f-\u009f]/g;

const escapeControl = (char: string) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** One line of text, controls escaped. */
export function visible(text: string): string {
  return text.replace(CONTROLS, escapeControl);
}

/** Text for a terminal, line breaks kept: each line's controls escaped. */
export function visibleLines(text: string): string {
  return text.split('\n').map(visible).join('\n');
}

/** JSON.stringify's text with DEL and C1 escaped too: the same JSON, safe on a terminal. */
export function safeJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(CONTROLS_JSON_KEEPS, escapeControl);
}
