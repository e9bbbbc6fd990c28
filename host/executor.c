#include "executor.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct executor {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct actor *head, *tail; /* the run queue */
	bool stopping;
	int n_workers;
	pthread_t *threads;
	task_drop_fn drop;
};

/* `wake`: signal an idle worker. A worker putting back the actor it just
 * ran takes it again itself, so it wakes nobody. */
static void runq_push(struct executor *e, struct actor *a, bool wake)
{
	pthread_mutex_lock(&e->lock);
	a->next_ready = NULL;
	if (e->tail)
		e->tail->next_ready = a;
	else
		e->head = a;
	e->tail = a;
	if (wake)
		pthread_cond_signal(&e->work);
	pthread_mutex_unlock(&e->lock);
}

static void *worker_main(void *arg)
{
	struct executor *e = arg;
	for (;;) {
		pthread_mutex_lock(&e->lock);
		while (!e->head && !e->stopping)
			pthread_cond_wait(&e->work, &e->lock);
		struct actor *a = e->head;
		if (!a) {
			pthread_mutex_unlock(&e->lock);
			return NULL;
		}
		e->head = a->next_ready;
		if (!e->head)
			e->tail = NULL;
		pthread_mutex_unlock(&e->lock);

		pthread_mutex_lock(&a->lock);
		struct task *tasks = a->box;
		size_t n = a->len;
		a->box = NULL;
		a->len = a->cap = 0;
		a->queued = false;
		a->running = true;
		pthread_mutex_unlock(&a->lock);

		if (n) {
			pthread_mutex_lock(&a->call_lock);
			a->dispatch(a->ctx, tasks, n);
			pthread_mutex_unlock(&a->call_lock);
		}
		free(tasks);

		pthread_mutex_lock(&a->lock);
		a->running = false;
		bool again = a->len > 0 && !a->closed;
		if (again)
			a->queued = true;
		else
			pthread_cond_broadcast(&a->idle);
		pthread_mutex_unlock(&a->lock);
		if (again)
			runq_push(e, a, false);
	}
}

int executor_create(int workers, task_drop_fn drop, struct executor **out)
{
	struct executor *e = calloc(1, sizeof *e);
	if (!e)
		return 2;
	if (workers <= 0)
		workers = 1;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->work, NULL);
	e->drop = drop;
	e->threads = calloc((size_t)workers, sizeof *e->threads);
	for (int i = 0; i < workers; i++) {
		if (pthread_create(&e->threads[i], NULL, worker_main, e) != 0)
			break;
		e->n_workers++;
	}
	if (e->n_workers == 0) {
		free(e->threads);
		free(e);
		return 2;
	}
	*out = e;
	return 0;
}

void executor_destroy(struct executor *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_cond_broadcast(&e->work);
	pthread_mutex_unlock(&e->lock);
	for (int i = 0; i < e->n_workers; i++)
		pthread_join(e->threads[i], NULL);
	free(e->threads);
	pthread_cond_destroy(&e->work);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

int executor_workers(const struct executor *e)
{
	return e->n_workers;
}

void actor_init(struct actor *a, struct executor *exec, actor_dispatch_fn dispatch, void *ctx)
{
	memset(a, 0, sizeof *a);
	pthread_mutex_init(&a->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->idle, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&a->call_lock, NULL);
	a->dispatch = dispatch;
	a->ctx = ctx;
	a->exec = exec;
}

bool actor_post(struct actor *a, struct task *task)
{
	pthread_mutex_lock(&a->lock);
	if (a->closed) {
		pthread_mutex_unlock(&a->lock);
		return false;
	}
	if (a->len == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		struct task *v = realloc(a->box, cap * sizeof *v);
		if (!v) {
			pthread_mutex_unlock(&a->lock);
			return false;
		}
		a->box = v;
		a->cap = cap;
	}
	a->box[a->len++] = *task;
	bool wake = !a->queued && !a->running;
	if (wake)
		a->queued = true;
	pthread_mutex_unlock(&a->lock);
	/* One hand-off per batch: an actor already queued or running picks the
	 * task up without another wake-up. */
	if (wake)
		runq_push(a->exec, a, true);
	return true;
}

bool actor_wait_idle(struct actor *a, uint64_t deadline_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
			      .tv_nsec = (long)(deadline_ns % 1000000000u)};
	pthread_mutex_lock(&a->lock);
	int rc = 0;
	while ((a->len > 0 || a->running || a->queued) && rc == 0)
		rc = pthread_cond_timedwait(&a->idle, &a->lock, &ts);
	bool idle = !(a->len > 0 || a->running || a->queued);
	pthread_mutex_unlock(&a->lock);
	return idle;
}

size_t actor_pending(struct actor *a)
{
	pthread_mutex_lock(&a->lock);
	size_t n = a->len + (a->running ? 1 : 0);
	pthread_mutex_unlock(&a->lock);
	return n;
}

void actor_close(struct actor *a)
{
	pthread_mutex_lock(&a->lock);
	a->closed = true;
	struct task *tasks = a->box;
	size_t n = a->len;
	a->box = NULL;
	a->len = a->cap = 0;
	pthread_mutex_unlock(&a->lock);
	for (size_t i = 0; i < n; i++)
		a->exec->drop(&tasks[i]);
	free(tasks);
}

void actor_fini(struct actor *a)
{
	actor_close(a);
	/* a worker may still hold the actor on the run queue */
	uint64_t forever = UINT64_MAX / 2;
	actor_wait_idle(a, forever);
	pthread_cond_destroy(&a->idle);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->call_lock);
}
