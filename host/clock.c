#include "clock.h"

#include <stdatomic.h>
#include <time.h>

static _Atomic uint64_t fake_ms;

uint64_t clock_now_ms(void)
{
	uint64_t f = atomic_load_explicit(&fake_ms, memory_order_relaxed);
	if (f)
		return f;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t clock_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void clock_set_fake(uint64_t ms)
{
	atomic_store(&fake_ms, ms);
}

void clock_advance(uint64_t ms)
{
	atomic_fetch_add(&fake_ms, ms);
}
