/* The executor: a pool of worker threads running actors. An actor (one per
 * plugin instance) owns a mailbox of tasks; a worker takes an actor whose
 * mailbox is not empty and runs its tasks in order, so that one actor is
 * never run by two threads at once (DESIGN.md, principle 3). Messages for
 * the same subscription that wait together are handed over as one batch. */
#ifndef PLANTD_EXECUTOR_H
#define PLANTD_EXECUTOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct executor;
struct plant_msg;

enum task_kind {
	TASK_MSG,  /* deliver `msg` to subscription `sub` */
	TASK_CALL, /* call fn(arg) */
};

struct task {
	enum task_kind kind;
	void *target; /* TASK_MSG: the subscription; TASK_CALL: fn's arg */
	union {
		struct plant_msg *msg; /* a reference the task owns */
		void (*fn)(void *arg, void *actor_ctx);
	} u;
};

/* Runs a batch of tasks taken from one actor's mailbox, in the worker. */
typedef void (*actor_dispatch_fn)(void *ctx, struct task *tasks, size_t n);
/* Drops a task that will never run (the actor closed). */
typedef void (*task_drop_fn)(struct task *task);

struct actor {
	pthread_mutex_t lock;
	pthread_cond_t idle; /* signalled when the actor has nothing left */
	struct task *box;    /* the mailbox */
	size_t len, cap;
	bool queued;  /* on the run queue */
	bool running; /* a worker is running it */
	bool closed;  /* refuses new tasks */
	struct actor *next_ready;
	/* serialises the actor's callbacks with lifecycle calls made from the
	 * main thread */
	pthread_mutex_t call_lock;
	actor_dispatch_fn dispatch;
	void *ctx;
	struct executor *exec;
};

int executor_create(int workers, task_drop_fn drop, struct executor **out);
/* Stops the workers after the run queue is empty. */
void executor_destroy(struct executor *exec);
int executor_workers(const struct executor *exec);

void actor_init(struct actor *a, struct executor *exec, actor_dispatch_fn dispatch, void *ctx);
/* Closes the mailbox, drops what waits in it, and frees the actor's
 * resources; the actor must be idle (see actor_close). */
void actor_fini(struct actor *a);
/* Append a task. Returns false (and does not take the task) when the actor
 * is closed. */
bool actor_post(struct actor *a, struct task *task);
/* Wait until the mailbox is empty and nothing runs, or until the deadline
 * (monotonic ns). Returns true when idle. */
bool actor_wait_idle(struct actor *a, uint64_t deadline_ns);
/* Refuse new tasks and drop those that wait. */
void actor_close(struct actor *a);
size_t actor_pending(struct actor *a);

#endif
