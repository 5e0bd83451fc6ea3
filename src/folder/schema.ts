import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';

// zod/mini: the same validation as zod's classic API, in a third of the code that every command loads;
// it has no messages of its own until given a locale.
z.config(en());
import {
  ERROR_KINDS,
  INTENSITIES,
  MAX_INSTRUCTION_LENGTH,
  OUTCOMES,
  TASK_ID_PATTERN,
  TASK_ID_RULE,
  type AttemptError,
  type QueueControlEvent,
  type RemovalRecord,
  type ClaimEvent,
  type HandEvent,
  type FoldRecord,
  type OutcomeEvent,
  type RateLimit,
  type ResultRef,
  type TaskDefinition,
  type WeatherRecord,
} from '../types.js';

export const taskIdSchema = z.string().check(z.regex(TASK_ID_PATTERN, `must be ${TASK_ID_RULE}`));

const budgetSchema = z.int().check(z.nonnegative());

/** An ISO 8601 UTC time as Date#toISOString writes it. A plain regex: z.iso.datetime() is slower, and every read checks thousands. */
const isoTime = z.string().check(z.regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/, 'must be an ISO 8601 UTC time'));

/** A task as stored in queue.json. Loose, so that fields written by a newer version survive a rewrite. */
export const taskDefinitionSchema = z.looseObject({
  id: taskIdSchema,
  instruction: z.string().check(z.minLength(1), z.maxLength(MAX_INSTRUCTION_LENGTH)),
  deps: z.array(taskIdSchema),
  min_budget: budgetSchema,
  max_budget: budgetSchema,
  intensity: z.enum(INTENSITIES),
  added_at: isoTime,
}) satisfies z.ZodMiniType<TaskDefinition>;

export const QUEUE_FORMAT_VERSION = 1;

/** Everything of queue.json but its tasks: the first line of the file as this tool writes it. */
export const queueHeaderSchema = z.looseObject({
  version: z.literal(QUEUE_FORMAT_VERSION),
  /** Ids of tasks removed by `worker clean`: their events in the log are skipped, and the ids are not reused. */
  removed: z.optional(z.array(taskIdSchema)),
});

export const queueFileSchema = z.extend(queueHeaderSchema, {
  tasks: z.array(taskDefinitionSchema),
});

const attemptErrorSchema = z.object({
  kind: z.enum(ERROR_KINDS),
  message: z.string(),
  http_status: z.optional(z.int()),
}) satisfies z.ZodMiniType<AttemptError>;

/** The queue-wide rate limit (--rate) a claim was made under: the claim counts only if it keeps within it. */
const rateLimitSchema = z.object({
  calls: z.int().check(z.positive()),
  per_ms: z.int().check(z.positive()),
}) satisfies z.ZodMiniType<RateLimit>;

/**
 * A worker takes a task. `prev` names the claim it supersedes (a dead or stale owner's), null for a pending
 * task. `at` is when the call may start: a claim stamped before the end of a pause the log holds, or
 * beyond its `rate`, does not count (see apiWeather.ts).
 */
export const claimEventSchema = z.looseObject({
  type: z.literal('claim'),
  task: taskIdSchema,
  token: z.string().check(z.minLength(1)),
  prev: z.nullable(z.string().check(z.minLength(1))),
  attempt: z.int().check(z.positive()),
  worker: z.string(),
  pid: z.int(),
  host: z.string(),
  at: isoTime,
  rate: z.optional(rateLimitSchema),
  /** Why a takeover superseded `prev` (its worker was gone, or its lock stale): for `logs` and `show`. */
  reason: z.optional(z.string()),
  concurrency: z.optional(z.int().check(z.positive())),
}) satisfies z.ZodMiniType<ClaimEvent>;

/** Where a result larger than INLINE_RESULT_BYTES is kept: bytes of a file in queue/results/ (see results.ts). */
export const resultRefSchema = z.object({
  file: z.string().check(z.regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\.results$/, 'must be the name of a results file')),
  offset: z.int().check(z.nonnegative()),
  length: z.int().check(z.nonnegative()),
  /** The API sent JSON: the result is that JSON parsed. */
  json: z.boolean(),
}) satisfies z.ZodMiniType<ResultRef>;

/** How one attempt ended. Counts only while its token is the task's claim in force (fencing). */
export const outcomeEventSchema = z.looseObject({
  type: z.literal('outcome'),
  task: taskIdSchema,
  token: z.string().check(z.minLength(1)),
  attempt: z.int().check(z.positive()),
  worker: z.string(),
  outcome: z.enum(OUTCOMES),
  /** false when the claim was given back before the API was called: the attempt does not count. */
  called: z.boolean(),
  /**
   * false when the call does not count as an attempt either: it never reached the API, the API was
   * unreachable for the whole queue, asked the queue to wait, or refused the worker's credentials.
   */
  charged: z.optional(z.boolean()),
  /** The API asked the whole queue to wait until then (429, or 503 with Retry-After): no claim counts before. */
  pause_until: z.optional(isoTime),
  /** When the first of the task's calls in a row that reached the API without counting as attempts started (--max-api-wait). */
  waiting_since: z.optional(isoTime),
  started_at: isoTime,
  ended_at: isoTime,
  duration_ms: z.number().check(z.nonnegative()),
  http_status: z.optional(z.int()),
  error: z.optional(attemptErrorSchema),
  retry_at: z.optional(isoTime),
  /** --max-attempts of the worker that recorded it, so that others can say "retry 2/3". */
  max_attempts: z.optional(z.int().check(z.positive())),
  result: z.optional(z.unknown()),
  result_ref: z.optional(resultRefSchema),
}) satisfies z.ZodMiniType<OutcomeEvent>;

/** A change by hand to one task (retry, rerun, edit, cancel): see HandEvent. */
function handEventSchema<Type extends string>(type: Type) {
  return z.looseObject({
    type: z.literal(type),
    task: taskIdSchema,
    at: isoTime,
    by: z.optional(z.string()),
  }) satisfies z.ZodMiniType<HandEvent<Type>>;
}

export const retryEventSchema = handEventSchema('retry');
export const rerunEventSchema = handEventSchema('rerun');
export const editEventSchema = handEventSchema('edit');
export const cancelEventSchema = handEventSchema('cancel');

/**
 * The first line of an execution log made by this version: the queue it belongs to (queue/queue-id). A log
 * that should have one and is gone, empty or another queue's is refused: every task would look pending.
 */
export const logHeaderSchema = z.looseObject({
  type: z.literal('log'),
  queue: z.string().check(z.minLength(1)),
  at: isoTime,
  /** 1 for a log as made; each `worker compact` makes the next. */
  generation: z.optional(z.int().check(z.positive())),
  /**
   * In a compacted log: where what was compacted ends. A reader that read the previous generation to its
   * seal goes on from here, without reading again what it already folded.
   */
  continues_at: z.optional(z.object({ offset: z.int().check(z.nonnegative()), line: z.int().check(z.positive()) })),
});

/** The last record of a generation: `worker compact` put its successor in place. Nothing after it counts. */
export const sealSchema = z.looseObject({
  type: z.literal('sealed'),
  generation: z.int().check(z.positive()),
  at: isoTime,
});

/**
 * The last record of what `worker compact` kept: the API's weather at the seal, which the dropped events
 * had made. Readers take it as it is (see ApiWeather.restore).
 */
export const weatherRecordSchema = z.looseObject({
  type: z.literal('weather'),
  at: isoTime,
  state: z.looseObject({
    starts: z.array(z.number()),
    pauses_in_a_row: z.int(),
    paused_by_hand: z.optional(z.nullable(z.object({ since: isoTime, by: z.string() }))),
  }),
}) satisfies z.ZodMiniType<WeatherRecord>;

/** `worker pause` and `worker resume`. */
export const queueControlSchema = z.looseObject({
  type: z.enum(['paused', 'resumed']),
  at: isoTime,
  by: z.string(),
}) satisfies z.ZodMiniType<QueueControlEvent>;

/** `worker remove` and `worker clean`: which tasks left the queue, who removed them and when. */
export const removalSchema = z.looseObject({
  type: z.literal('removed'),
  at: isoTime,
  by: z.string(),
  command: z.enum(['remove', 'clean']),
  tasks: z.array(taskIdSchema),
  count: z.int().check(z.nonnegative()),
}) satisfies z.ZodMiniType<RemovalRecord>;

export const eventSchema = z.discriminatedUnion('type', [
  claimEventSchema,
  outcomeEventSchema,
  retryEventSchema,
  rerunEventSchema,
  editEventSchema,
  cancelEventSchema,
  logHeaderSchema,
  sealSchema,
  weatherRecordSchema,
  queueControlSchema,
  removalSchema,
]);

export type LogHeader = z.infer<typeof logHeaderSchema>;
export type Seal = z.infer<typeof sealSchema>;
/** Every line of the log. */
export type LogRecord = FoldRecord | LogHeader | Seal;
