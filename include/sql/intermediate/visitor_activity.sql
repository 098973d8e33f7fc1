-- Internal: every (customer_id, visitor_id) pair the events show, with when it was last
-- seen. The events table is the largest; identity_map and customer_facts read this
-- instead of scanning it again.
SELECT customer_id, visitor_id, MAX(occurred_at) AS last_seen_at, COUNT(*) AS events
FROM {{ src('events') }} events
GROUP BY customer_id, visitor_id
