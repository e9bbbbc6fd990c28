/* sim_common: a binary min-heap of (due time, sensor index), the
 * free-running schedule. With 8000 sensors a pop and a push cost about 13
 * comparisons each, far below the cost of writing the reading. */
#include <stdlib.h>

#include "sim.h"

static inline bool item_less(const struct sim_heap_item *a, const struct sim_heap_item *b)
{
	return a->due < b->due || (a->due == b->due && a->idx < b->idx);
}

int sim_heap_init(struct sim_heap *h, size_t cap)
{
	h->n = 0;
	h->cap = cap ? cap : 1;
	h->a = malloc(h->cap * sizeof *h->a);
	return h->a ? PLANT_OK : PLANT_E_NOMEM;
}

void sim_heap_free(struct sim_heap *h)
{
	free(h->a);
	h->a = NULL;
	h->n = h->cap = 0;
}

static void sift_down(struct sim_heap *h, size_t i)
{
	struct sim_heap_item x = h->a[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && item_less(&h->a[c + 1], &h->a[c]))
			c++;
		if (!item_less(&h->a[c], &x))
			break;
		h->a[i] = h->a[c];
		i = c;
	}
	h->a[i] = x;
}

/* The caller sized the heap for every sensor at init: pushes never grow. */
void sim_heap_push(struct sim_heap *h, uint64_t due, uint32_t idx)
{
	struct sim_heap_item x = {.due = due, .idx = idx};
	size_t i;

	if (h->n == h->cap)
		return;
	i = h->n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!item_less(&x, &h->a[parent]))
			break;
		h->a[i] = h->a[parent];
		i = parent;
	}
	h->a[i] = x;
}

void sim_heap_pop(struct sim_heap *h)
{
	if (!h->n)
		return;
	h->a[0] = h->a[--h->n];
	if (h->n)
		sift_down(h, 0);
}

void sim_heap_replace_top(struct sim_heap *h, uint64_t due, uint32_t idx)
{
	if (!h->n)
		return;
	h->a[0].due = due;
	h->a[0].idx = idx;
	sift_down(h, 0);
}
