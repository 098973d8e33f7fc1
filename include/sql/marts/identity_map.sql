-- Which customer an anonymous visitor is: the customer they last logged in as (an
-- event carrying both ids) or last ordered as. One row per visitor.
WITH links AS (
    -- most logged-in events repeat the same pair: reduce to pairs before ranking
    SELECT visitor_id, customer_id, MAX(seen_at) AS seen_at
    FROM (
        SELECT visitor_id, customer_id, last_seen_at AS seen_at
        FROM {{ mart('visitor_activity') }} activity
        WHERE visitor_id IS NOT NULL AND customer_id IS NOT NULL
        UNION ALL
        SELECT visitor_id, customer_id, created_at AS seen_at
        FROM {{ src('orders') }} orders
        WHERE visitor_id IS NOT NULL
    ) seen
    GROUP BY visitor_id, customer_id
), ranked AS (
    SELECT visitor_id, customer_id, seen_at,
           ROW_NUMBER() OVER (PARTITION BY visitor_id ORDER BY seen_at DESC, customer_id) AS latest
    FROM links
)
SELECT visitor_id, customer_id, seen_at AS linked_at
FROM ranked
WHERE latest = 1
